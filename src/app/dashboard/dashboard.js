// The rollout dashboard: log in with an admin token, then every panel refreshes by itself
// (settings, rollout, instances, decisions and the most denied every 5 s; the audit tail
// every 2.5 s), pausing while the tab is hidden or when the operator pauses it.

import { ApiError, call, explain, token, withQuery } from './api.js';
import { byId, setText } from './dom.js';
import { DecisionsPanel } from './decisions.js';
import * as panels from './panels.js';
import { setupActions } from './actions.js';

const MAIN_EVERY_MS = 5000;
const AUDIT_EVERY_MS = 2500;

const NOT_ADMIN = "this token is not an admin's: gatehouse accepted it, but the admin API needs "
  + 'role admin or scope gatehouse:admin (HTTP 403); log in with an admin token';
const REFUSED = "token refused (expired or not signed by this deployment's keys)";

const shown = { settings: null, rollout: null };
// Bumped at every log-out: an answer that arrives after it belongs to the last session and is
// dropped, so nothing it held is shown again.
let epoch = 0;
let decisions;
let actions;

/** Runs `work` every `every` ms while logged in, not paused and the tab visible. */
class Loop {
  constructor(work, every) {
    this.work = work;
    this.every = every;
    this.timer = null;
    this.running = false;
    this.busy = null;
  }

  start() {
    this.running = true;
    this.now();
  }

  stop() {
    this.running = false;
    clearTimeout(this.timer);
    this.timer = null;
  }

  /** Runs now (once more if a run is under way), then on schedule. */
  async now() {
    if (!this.running) return;
    clearTimeout(this.timer);
    while (this.busy) await this.busy;
    if (!this.running) return;
    this.busy = this.work().finally(() => { this.busy = null; });
    await this.busy;
    this.schedule();
  }

  schedule() {
    clearTimeout(this.timer);
    if (!this.running) return;
    this.timer = setTimeout(() => {
      if (paused() || document.hidden) this.schedule();
      else this.now();
    }, this.every);
  }
}

const mainLoop = new Loop(refreshMain, MAIN_EVERY_MS);
const auditLoop = new Loop(refreshAudit, AUDIT_EVERY_MS);

function paused() {
  return byId('pause').getAttribute('aria-pressed') === 'true';
}

function currentWindow() {
  return byId('window').value;
}

/** One refresh of every panel but the audit tail; panels fail on their own. */
async function refreshMain() {
  const span = currentWindow();
  const mine = epoch;
  const [settings, history, rollout, instances, stats, summary] = await Promise.allSettled([
    call('GET', 'v1/enforcement'),
    call('GET', 'v1/enforcement/history?limit=50'),
    call('GET', 'v1/rollout'),
    call('GET', 'v1/instances'),
    call('GET', DecisionsPanel.path(span)),
    call('GET', withQuery('v1/audit/summary', { since: span })),
  ]);
  if (mine !== epoch) return;
  const results = [settings, history, rollout, instances, stats, summary];
  const refusal = results.find((r) => r.status === 'rejected' && isRefusal(r.reason));
  if (refusal) {
    refused(refusal.reason);
    return;
  }
  if (settings.status === 'fulfilled') shown.settings = settings.value;
  const entries = history.status === 'fulfilled' ? history.value.entries : null;
  if (settings.status === 'fulfilled') {
    panels.showSettings(settings.value, entries && entries.length ? entries[0] : null);
  } else {
    panels.settingsFailed(explain(settings.reason));
  }
  if (entries) panels.showHistory(entries);
  else panels.historyFailed(explain(history.reason));
  if (rollout.status === 'fulfilled') {
    shown.rollout = rollout.value;
    panels.showRollout(rollout.value);
  } else {
    panels.rolloutFailed(explain(rollout.reason));
  }
  if (instances.status === 'fulfilled') panels.showInstances(instances.value, shown.settings?.version);
  else panels.instancesFailed(explain(instances.reason));
  if (stats.status === 'fulfilled') decisions.show(stats.value, span);
  else decisions.fail(explain(stats.reason));
  if (summary.status === 'fulfilled') panels.showTop(summary.value, span);
  else panels.topFailed(explain(summary.reason));
  actions.update();
  const at = new Date().toISOString().slice(11, 19);
  setText('refresh-state', paused() ? `paused; last read ${at} UTC` : `read ${at} UTC`);
  document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
}

async function refreshAudit() {
  const filters = byId('audit-filters').elements;
  const path = withQuery('v1/audit', {
    limit: 50,
    decision: filters.decision.value,
    user: filters.user.value,
    session_id: filters.session_id.value,
    endpoint: filters.endpoint.value,
  });
  const mine = epoch;
  try {
    const page = await call('GET', path);
    if (mine === epoch) panels.showAudit(page);
  } catch (error) {
    if (mine !== epoch) return;
    if (isRefusal(error)) refused(error);
    else panels.auditFailed(explain(error));
  }
}

function isRefusal(error) {
  return error instanceof ApiError && (error.status === 401 || error.status === 403);
}

/** The token no longer works (expired, or not an admin's): back to the login box. */
function refused(error) {
  logOut(error.status === 403 ? NOT_ADMIN : `${REFUSED}: ${error.message}`);
}

function showLogin(message) {
  byId('board').hidden = true;
  byId('toolbar').hidden = true;
  byId('login').hidden = false;
  const line = byId('login-error');
  line.textContent = message || '';
  line.hidden = !message;
  byId('token').focus();
}

function showBoard() {
  byId('login').hidden = true;
  byId('login-error').hidden = true;
  byId('board').hidden = false;
  byId('toolbar').hidden = false;
  mainLoop.start();
  auditLoop.start();
}

function logOut(message) {
  epoch += 1;
  token.clear();
  mainLoop.stop();
  auditLoop.stop();
  shown.settings = null;
  shown.rollout = null;
  decisions.reset();
  actions.reset();
  for (const table of byId('board').querySelectorAll('tbody')) table.replaceChildren();
  byId('history').replaceChildren();
  showLogin(message);
}

/** Checks the token against the admin API, then opens the board or says why not. */
async function logIn(raw) {
  const value = raw.trim().replace(/^bearer\s+/i, '');
  if (!value) return;
  token.set(value);
  byId('login-button').disabled = true;
  try {
    shown.settings = await call('GET', 'v1/enforcement');
    byId('token').value = '';
    showBoard();
  } catch (error) {
    if (error instanceof ApiError && error.status === 503) {
      // Authenticated, but the settings are not known yet (the store is away): the board
      // shows each panel's error; a refused token still brings the login box back.
      byId('token').value = '';
      showBoard();
    } else if (isRefusal(error)) {
      refused(error);
    } else {
      token.clear();
      showLogin(`could not check the token: ${error.message}`);
    }
  } finally {
    byId('login-button').disabled = false;
  }
}

function start() {
  decisions = new DecisionsPanel();
  actions = setupActions({
    settings: () => shown.settings,
    recommendation: () => shown.rollout?.recommendation ?? null,
    refresh: () => mainLoop.now(),
    refused,
  });
  byId('login-form').addEventListener('submit', (event) => {
    event.preventDefault();
    logIn(byId('token').value);
  });
  byId('logout').addEventListener('click', () => logOut(''));
  byId('pause').addEventListener('click', () => {
    const button = byId('pause');
    const pause = !paused();
    button.setAttribute('aria-pressed', String(pause));
    button.textContent = pause ? 'resume refreshing' : 'pause refreshing';
    setText('refresh-state', pause ? 'paused' : 'refreshing');
    if (!pause) {
      mainLoop.now();
      auditLoop.now();
    }
  });
  byId('window').addEventListener('change', () => mainLoop.now());
  let typing = null;
  byId('audit-filters').addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(() => auditLoop.now(), 300);
  });
  byId('audit-filters').addEventListener('submit', (event) => event.preventDefault());
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && !paused()) {
      mainLoop.now();
      auditLoop.now();
    }
  });
  const saved = token.get();
  if (saved) logIn(saved);
  else showLogin('');
}

start();
