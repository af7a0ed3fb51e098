// Building the page from data without ever parsing data as markup: every text goes through
// textContent, every attribute through setAttribute with a fixed name. User names, session
// ids and reasons come from callers; markup built from them would run in a page that holds
// an admin token.

/** The element with this id (every id the scripts use is in index.html). */
export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`no #${id} in the page`);
  return node;
}

/**
 * A new element: `el('td', {text: name, className: 'num', attrs: {'data-label': 'user'}},
 * ...children)`. Attributes named `style` or `on...` are refused: the page has none.
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  if (props.className) node.className = props.className;
  if (props.text !== undefined && props.text !== null) node.textContent = String(props.text);
  if (props.title) node.title = String(props.title);
  for (const [name, value] of Object.entries(props.attrs || {})) {
    if (name === 'style' || name.startsWith('on')) throw new Error(`no ${name} attribute`);
    node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

/** Sets the text of the element with this id. */
export function setText(id, text) {
  byId(id).textContent = text === undefined || text === null ? '' : String(text);
}

/** Replaces the rows of a table's body; each row is a list of cells (text or elements). */
export function fillTable(table, rows, emptyText) {
  const body = table.tBodies[0];
  const heads = [...table.tHead.rows[0].cells];
  const labels = heads.map((cell) => cell.textContent.trim());
  const fresh = rows.map((cells) => el('tr', {}, ...cells.map((cell, i) => {
    const td = cell instanceof Node && (cell.nodeName === 'TD' || cell.nodeName === 'TH')
      ? cell : el('td', {}, cellContent(cell));
    td.setAttribute('data-label', labels[i] || '');
    // A column's kind (`id`: wraps anywhere; `num`: right-aligned) comes from its header.
    for (const kind of ['id', 'num']) {
      if (heads[i] && heads[i].classList.contains(kind)) td.classList.add(kind);
    }
    return td;
  })));
  if (fresh.length === 0 && emptyText) {
    fresh.push(el('tr', { className: 'empty' },
      el('td', { text: emptyText, attrs: { colspan: labels.length, 'data-label': '' } })));
  }
  body.replaceChildren(...fresh);
}

function cellContent(cell) {
  if (cell instanceof Node) return cell;
  return document.createTextNode(cell === undefined || cell === null ? '—' : String(cell));
}

/** A time as `YYYY-MM-DD HH:MM:SS` UTC (the API's times are UTC). */
export function utc(iso, withDate = true) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso ?? '—');
  const text = date.toISOString();
  return withDate ? `${text.slice(0, 10)} ${text.slice(11, 19)} UTC` : text.slice(11, 19);
}

/** How long ago, in words: `3 s ago`, `5 min ago`, `2 h ago`, `4 d ago`. */
export function ago(iso, now = Date.now()) {
  const then = new Date(iso).getTime();
  if (Number.isNaN(then)) return '';
  const s = Math.max(0, Math.round((now - then) / 1000));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** Shows or hides a panel's error line (`.panel-error` of the card holding `inside`). */
export function panelError(card, text) {
  const line = card.querySelector('.panel-error');
  line.textContent = text || '';
  line.hidden = !text;
}
