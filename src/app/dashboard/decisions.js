// Decisions over time (`GET /v1/stats/decisions`): a stacked bar chart of one endpoint (or
// all) and, beside it, a table of the totals per endpoint and category, the same numbers in
// words for readers who cannot tell the colours apart (each category also has its own fill
// pattern and legend label).

import { el, fillTable, panelError, setText, utc } from './dom.js';

/** The stack categories, bottom to top. */
export const CATEGORIES = ['allow', 'would_deny', 'deny', 'store_unavailable'];

const LOOK = {
  allow: { label: 'allow', color: '#3f8f63', pattern: 'plain' },
  would_deny: { label: 'would deny', color: '#d99a1e', pattern: 'stripes' },
  deny: { label: 'deny', color: '#c4403a', pattern: 'cross' },
  store_unavailable: { label: 'store unavailable', color: '#6a6fc4', pattern: 'dots' },
};

/** The step each window is asked with (at most 1440 buckets per answer). */
export const STEPS = { '1h': '1m', '24h': '15m', '7d': '1h' };

/**
 * A series' category: `store_unavailable` when the store or the settings could not be read,
 * whatever the decision; else the decision.
 */
export function category(series) {
  if (series.reason === 'store_unavailable' || series.reason === 'settings_unavailable') {
    return 'store_unavailable';
  }
  return series.decision;
}

/** The selector's value for a series' endpoint (`null`: the merged "other endpoints"). */
function endpointKey(endpoint) {
  return endpoint === null || endpoint === undefined ? 'other' : `name:${endpoint}`;
}

function endpointLabel(key) {
  return key === 'other' ? 'other endpoints (merged)' : key.slice('name:'.length);
}

/** Per-bucket counts per category for one selection (`all`, `name:x`, `other`). */
export function stacked(stats, selection) {
  const n = stats.buckets.length;
  const data = Object.fromEntries(CATEGORIES.map((c) => [c, new Array(n).fill(0)]));
  for (const series of stats.series) {
    if (selection !== 'all' && endpointKey(series.endpoint) !== selection) continue;
    const counts = data[category(series)];
    if (!counts) continue;
    series.counts.forEach((count, i) => { counts[i] += count; });
  }
  return data;
}

/** Totals per endpoint (sorted, "other" last) and category, with a row for all. */
export function totals(stats) {
  const rows = new Map();
  const zero = () => Object.fromEntries(CATEGORIES.map((c) => [c, 0]));
  for (const series of stats.series) {
    const key = endpointKey(series.endpoint);
    if (!rows.has(key)) rows.set(key, zero());
    const c = category(series);
    if (c in rows.get(key)) {
      rows.get(key)[c] += series.counts.reduce((a, b) => a + b, 0);
    }
  }
  const keys = [...rows.keys()].sort((a, b) => (a === 'other') - (b === 'other') || a.localeCompare(b));
  return keys.map((key) => ({ key, counts: rows.get(key) }));
}

function pattern(color, kind) {
  const size = 10;
  const tile = document.createElement('canvas');
  tile.width = size;
  tile.height = size;
  const g = tile.getContext('2d');
  g.fillStyle = color;
  g.fillRect(0, 0, size, size);
  g.strokeStyle = 'rgba(0, 0, 0, 0.5)';
  g.fillStyle = 'rgba(0, 0, 0, 0.5)';
  g.lineWidth = 1.6;
  const line = (x1, y1, x2, y2) => { g.beginPath(); g.moveTo(x1, y1); g.lineTo(x2, y2); g.stroke(); };
  if (kind === 'stripes' || kind === 'cross') {
    line(0, size, size, 0);
    line(-size / 2, size / 2, size / 2, -size / 2);
    line(size / 2, size * 1.5, size * 1.5, size / 2);
  }
  if (kind === 'cross') {
    line(0, 0, size, size);
    line(-size / 2, size / 2, size / 2, size * 1.5);
    line(size / 2, -size / 2, size * 1.5, size / 2);
  }
  if (kind === 'dots') {
    g.beginPath();
    g.arc(size / 2, size / 2, 1.8, 0, Math.PI * 2);
    g.fill();
  }
  return g.createPattern(tile, 'repeat');
}

/** The chart and table of the decisions card. */
export class DecisionsPanel {
  constructor() {
    this.card = document.getElementById('decisions-card');
    this.canvas = document.getElementById('decisions-chart');
    this.table = document.getElementById('decisions-table');
    this.select = document.getElementById('d-endpoint');
    this.stats = null;
    this.window = '1h';
    this.select.addEventListener('change', () => this.draw());
    this.chart = null;
  }

  ensureChart() {
    if (this.chart) return this.chart;
    const Chart = window.Chart;
    this.chart = new Chart(this.canvas, {
      type: 'bar',
      data: {
        labels: [],
        datasets: CATEGORIES.map((c) => ({
          category: c,
          label: LOOK[c].label,
          data: [],
          backgroundColor: pattern(LOOK[c].color, LOOK[c].pattern),
          borderColor: LOOK[c].color,
          borderWidth: 1,
        })),
      },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: 'index', intersect: false },
        scales: {
          x: {
            stacked: true,
            ticks: {
              maxRotation: 0,
              autoSkip: true,
              callback: (value) => this.tick(this.chart.data.labels[value]),
            },
          },
          y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } },
        },
        plugins: {
          legend: { position: 'bottom', labels: { boxWidth: 28, boxHeight: 14 } },
          tooltip: { callbacks: { title: (items) => (items.length ? utc(items[0].label) : '') } },
        },
      },
    });
    return this.chart;
  }

  tick(iso) {
    if (!iso) return '';
    const text = new Date(iso).toISOString();
    return this.window === '7d' ? `${text.slice(5, 10)} ${text.slice(11, 16)}` : text.slice(11, 16);
  }

  /** The path of the stats call for `window`. */
  static path(window) {
    return `v1/stats/decisions?since=${window}&step=${STEPS[window]}`;
  }

  show(stats, window) {
    panelError(this.card, '');
    this.stats = stats;
    this.window = window;
    this.updateSelect(stats);
    this.draw();
    this.fillTotals(stats);
    const partial = stats.complete === false ? ' (incomplete: part of the window is older than the counts are kept)' : '';
    setText('d-range', `${utc(stats.since)} to ${utc(stats.until)}, buckets of ${stats.step_seconds / 60} min${partial}`);
  }

  fail(text) {
    panelError(this.card, text);
  }

  updateSelect(stats) {
    const keys = totals(stats).map((row) => row.key);
    const current = this.select.value;
    const wanted = ['all', ...keys];
    if (current !== 'all' && !wanted.includes(current)) wanted.push(current);
    const have = [...this.select.options].map((o) => o.value);
    if (have.join('\n') !== wanted.join('\n')) {
      this.select.replaceChildren(...wanted.map((key) => el('option', {
        text: key === 'all' ? 'all endpoints' : endpointLabel(key),
        attrs: { value: key },
      })));
      this.select.value = current;
    }
    const names = document.getElementById('endpoint-names');
    const options = keys.filter((k) => k !== 'other').map((k) => el('option', { attrs: { value: endpointLabel(k) } }));
    names.replaceChildren(...options);
  }

  draw() {
    if (!this.stats || !window.Chart) return;
    const chart = this.ensureChart();
    const data = stacked(this.stats, this.select.value);
    chart.data.labels = this.stats.buckets.slice();
    for (const dataset of chart.data.datasets) dataset.data = data[dataset.category];
    chart.update('none');
    for (const row of this.table.tBodies[0].rows) {
      row.classList.toggle('selected', row.dataset.key === this.select.value);
    }
  }

  fillTotals(stats) {
    const rows = totals(stats);
    const all = Object.fromEntries(CATEGORIES.map((c) => [c, 0]));
    for (const row of rows) for (const c of CATEGORIES) all[c] += row.counts[c];
    const line = (key, label, counts) => {
      const sum = CATEGORIES.reduce((a, c) => a + counts[c], 0);
      return [el('th', { text: label, attrs: { scope: 'row' } }), ...CATEGORIES.map((c) => counts[c]), sum];
    };
    const body = [...rows.map((row) => line(row.key, endpointLabel(row.key), row.counts)), line('all', 'all endpoints', all)];
    fillTable(this.table, body.map((cells) => cells.map((cell, i) => (i === 0 ? cell : el('td', { text: cell, className: 'num' })))));
    const keys = [...rows.map((row) => row.key), 'all'];
    [...this.table.tBodies[0].rows].forEach((row, i) => {
      row.dataset.key = keys[i];
      row.classList.toggle('total', keys[i] === 'all');
      row.classList.toggle('selected', keys[i] === this.select.value);
    });
  }

  reset() {
    this.stats = null;
    if (this.chart) {
      this.chart.data.labels = [];
      for (const dataset of this.chart.data.datasets) dataset.data = [];
      this.chart.update('none');
    }
    this.table.tBodies[0].replaceChildren();
  }
}
