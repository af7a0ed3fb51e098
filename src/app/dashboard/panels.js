// The read-only panels: settings, rollout and ownership, instances, the most denied, the audit
// tail and the history timeline. Each takes an API answer and writes text into the page.

import { ago, byId, el, fillTable, panelError, setText, utc } from './dom.js';

const PHASES = {
  killed: 'kill switch on: nothing is checked, everything is allowed',
  disabled: 'DISABLED: nothing is checked',
  observing: 'LOG_ONLY: deciding and recording, refusing nobody',
  partial: 'ENFORCED for a share of users (the others LOG_ONLY)',
  enforced: 'ENFORCED for everyone',
};

/** `ENFORCED for 10 % of users`, `LOG_ONLY`... of a mode and an optional percentage. */
export function stepLabel(step) {
  if (!step) return '—';
  if (step.enforce_percent !== undefined && step.enforce_percent !== null) {
    return `${step.mode} for ${step.enforce_percent} % of users`;
  }
  return step.mode === 'ENFORCED' ? 'ENFORCED for everyone' : step.mode;
}

/** A history entry's `from` or `to` in words. */
export function changeValue(value) {
  if (value === null || value === undefined) return '—';
  if (typeof value === 'boolean') return value ? 'on' : 'off';
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && 'version' in value) {
    const overrides = Object.keys(value.endpoints || {}).length;
    return `v${value.version}: ${stepLabel(value)}, ${overrides} override(s), kill switch ${value.kill_switch ? 'on' : 'off'}`;
  }
  if (typeof value === 'object' && 'mode' in value) return stepLabel(value);
  return JSON.stringify(value);
}

function badge(decision) {
  return el('span', { className: `badge d-${String(decision).replace(/[^a-z_]/g, '')}`, text: decision });
}

/** The settings card (and the kill-switch card's state line). */
export function showSettings(settings, newest) {
  const card = byId('settings-card');
  panelError(card, '');
  setText('s-mode', settings.mode);
  setText('s-percent', settings.mode !== 'ENFORCED' ? '— (ENFORCED only)'
    : settings.enforce_percent === null || settings.enforce_percent === undefined ? 'everyone'
      : `${settings.enforce_percent} % of users (the others LOG_ONLY)`);
  const kill = byId('s-kill');
  kill.textContent = settings.kill_switch ? 'ON: every endpoint is DISABLED' : 'off';
  kill.classList.toggle('alarm', Boolean(settings.kill_switch));
  setText('s-version', settings.version);
  setText('s-updated', settings.updated_at
    ? `${utc(settings.updated_at)} (${ago(settings.updated_at)}) by ${settings.updated_by ?? '—'}`
    : 'never changed');
  setText('s-reason', newest ? `${newest.reason} (v${newest.version}, ${newest.change})` : '—');
  const overrides = Object.entries(settings.endpoints || {}).sort(([a], [b]) => a.localeCompare(b));
  fillTable(byId('overrides'), overrides.map(([name, mode]) => [name, mode]));
  byId('overrides').hidden = overrides.length === 0;
  byId('overrides-empty').hidden = overrides.length !== 0;
  const state = byId('kill-state');
  state.textContent = settings.kill_switch
    ? 'The kill switch is ON: every check is allowed (reason enforcement_disabled) on every endpoint.'
    : 'The kill switch is off. Turning it on allows every check on every endpoint at once.';
  state.classList.toggle('alarm', Boolean(settings.kill_switch));
}

export function settingsFailed(text) {
  panelError(byId('settings-card'), text);
}

/** The rollout card: phase, recommendation, ownership coverage. */
export function showRollout(rollout) {
  const card = byId('rollout-card');
  panelError(card, '');
  setText('r-phase', `${rollout.phase}: ${PHASES[rollout.phase] ?? ''}`);
  setText('r-since', rollout.phase_since ? `${utc(rollout.phase_since)} (${ago(rollout.phase_since)})` : '—');
  const d = rollout.decisions;
  setText('r-window', d
    ? `${d.would_deny} would deny, ${d.deny} deny (${d.store_unavailable} store unavailable)${d.complete ? '' : ', incomplete'}`
    : '—');
  const rec = rollout.recommendation;
  setText('r-action', rec.action === 'advance' ? `advance to ${stepLabel(rec.next)}` : 'hold');
  byId('r-reasons').replaceChildren(...(rec.reasons || []).map((reason) => el('li', { text: reason })));
  const owned = rollout.ownership?.owned_sessions;
  setText('o-owned', owned ?? '—');
  const verify = rollout.ownership?.last_verify;
  const progress = byId('o-progress');
  if (verify) {
    setText('o-verify', `${utc(verify.at)}${verify.by ? ` by ${verify.by}` : ''}: ${verify.owned} of ${verify.expected} expected owned, `
      + `${verify.missing} missing, ${verify.extra} extra${verify.complete ? '' : ' (incomplete)'}`);
    progress.max = Math.max(1, verify.expected);
    progress.value = Math.min(verify.owned, progress.max);
    progress.textContent = `${verify.owned} of ${verify.expected}`;
    progress.hidden = false;
  } else {
    setText('o-verify', 'none reported (run GET /v1/backfill/verify)');
    progress.hidden = true;
  }
}

export function rolloutFailed(text) {
  panelError(byId('rollout-card'), text);
}

/** The instances seen lately, and which settings version each runs. */
export function showInstances(answer, version) {
  const card = byId('instances-card');
  panelError(card, '');
  const rows = (answer.instances || []).map((i) => {
    const behind = version !== null && version !== undefined && i.settings_version < version;
    const settings = el('td', {
      className: behind ? 'alarm' : '',
      text: `v${i.settings_version} (${i.settings_source})${behind ? ` · behind v${version}` : ''}`,
      title: 'as of its last heartbeat (every 5 s)',
    });
    return [i.instance, settings, i.build_version, el('td', { text: ago(i.seen_at), title: `started ${utc(i.started_at)}, seen ${utc(i.seen_at)}` })];
  });
  fillTable(byId('instances'), rows, 'no instance seen in the last 30 s');
}

export function instancesFailed(text) {
  panelError(byId('instances-card'), text);
  fillTable(byId('instances'), []);
}

/** The users, sessions and reasons with the most deny and would-deny decisions. */
export function showTop(summary, window) {
  const card = byId('top-card');
  panelError(card, '');
  fillTable(byId('top-users'), (summary.top_users || []).map((u) => [u.user, el('td', { text: u.count, className: 'num' })]), 'none');
  if (Array.isArray(summary.top_sessions)) {
    fillTable(byId('top-sessions'), summary.top_sessions.map((s) => [s.session_id, el('td', { text: s.count, className: 'num' })]), 'none');
  } else {
    fillTable(byId('top-sessions'), [], 'not reported by this instance');
  }
  const reasons = Object.entries(summary.by_reason || {}).sort(([a, x], [b, y]) => y - x || a.localeCompare(b));
  fillTable(byId('top-reasons'), reasons.map(([reason, n]) => [reason, el('td', { text: n, className: 'num' })]), 'none');
  const decisions = Object.entries(summary.by_decision || {}).map(([d, n]) => `${n} ${d}`).join(', ');
  setText('top-note', `Audited in the ${window} window: ${decisions || 'nothing'}${summary.complete === false ? ' (incomplete)' : ''}.`);
}

export function topFailed(text) {
  panelError(byId('top-card'), text);
}

/** The newest audit entries matching the filters. */
export function showAudit(page) {
  const card = byId('audit-card');
  panelError(card, '');
  const rows = (page.entries || []).map((e) => [
    el('td', { text: utc(e.ts), title: e.id }),
    el('td', {}, badge(e.decision)),
    e.reason, e.user, e.session_id, e.endpoint, e.mode, e.source, e.instance,
  ]);
  fillTable(byId('audit'), rows, 'no entry matches');
}

export function auditFailed(text) {
  panelError(byId('audit-card'), text);
}

/** One side of a change; an endpoint without an override follows the global mode. */
function side(entry, value) {
  if ((value === null || value === undefined) && String(entry.change).startsWith('endpoint:')) {
    return 'no override';
  }
  return changeValue(value);
}

/** The change history as a timeline, newest first. */
export function showHistory(entries) {
  const card = byId('history-card');
  panelError(card, '');
  byId('history').replaceChildren(...entries.map((h) => el('li', {},
    el('p', { className: 'when' },
      el('strong', { text: `v${h.version}` }),
      document.createTextNode(` · ${utc(h.at)} · ${h.actor}`)),
    el('p', { className: 'what' },
      el('code', { text: h.change }),
      document.createTextNode(`: ${side(h, h.from)} → ${side(h, h.to)}`)),
    el('p', { className: 'why', text: `“${h.reason}”` }))));
  if (entries.length === 0) byId('history').append(el('li', { text: 'no change recorded yet' }));
}

export function historyFailed(text) {
  panelError(byId('history-card'), text);
}
