// The changes an operator makes from the page. Each asks for a reason (its button stays
// disabled until one is typed) and sends `expected_version`: the settings version the page
// last showed. A 409 means someone else changed the settings meanwhile: it is shown, never
// retried or overwritten, and the page reads the settings again for the operator to review.

import { ApiError, call } from './api.js';
import { byId } from './dom.js';
import { stepLabel } from './panels.js';

/** The words of a version conflict (409). */
export function conflictMessage(error) {
  const current = error.problem?.current_version;
  const version = current === undefined || current === null ? 'a newer version' : `version ${current}`;
  return `someone else changed the settings: ${version} is now in force; review and try again`;
}

/**
 * Wires the forms. `page` gives what the page shows and how to refresh it:
 * `{ settings(), recommendation(), refresh(), refused(error) }`.
 */
export function setupActions(page) {
  const forms = [];

  const action = (formId, buttonId, enabled, send) => {
    const form = byId(formId);
    const button = byId(buttonId);
    const reason = form.elements.reason;
    const status = form.querySelector('.action-status');
    const sync = () => {
      button.disabled = form.dataset.busy === '1' || reason.value.trim() === '' || !enabled();
    };
    form.addEventListener('input', sync);
    form.addEventListener('change', sync);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      sync();
      if (button.disabled) return;
      const settings = page.settings();
      form.dataset.busy = '1';
      sync();
      status.className = 'action-status';
      status.textContent = 'sending…';
      try {
        const body = { reason: reason.value.trim(), expected_version: settings.version };
        const after = await send(body, settings);
        status.textContent = `done: version ${after.version} is in force`;
        status.classList.add('ok');
        reason.value = '';
        form.dataset.dirty = '';
      } catch (error) {
        status.classList.add('error');
        if (error instanceof ApiError && error.status === 409) {
          status.textContent = conflictMessage(error);
          status.classList.add('conflict');
        } else {
          status.textContent = error.message;
          if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
            page.refused(error);
            return;
          }
        }
      } finally {
        form.dataset.busy = '';
        sync();
      }
      // After a success as after a conflict: show what is in force now.
      await page.refresh();
    });
    forms.push({ form, sync, status });
    sync();
  };

  const hasSettings = () => page.settings() !== null;

  action('kill-form', 'kill-button', hasSettings, (body, settings) => call(
    settings.kill_switch ? 'DELETE' : 'POST', 'v1/enforcement/kill-switch', body,
  ));

  action('apply-form', 'apply-button', () => hasSettings() && page.recommendation()?.action === 'advance'
    && Boolean(page.recommendation()?.next), (body) => {
    const next = page.recommendation().next;
    const change = { mode: next.mode, ...body };
    if (next.enforce_percent !== undefined && next.enforce_percent !== null) {
      change.enforce_percent = next.enforce_percent;
    }
    return call('PUT', 'v1/enforcement', change);
  });

  const globalForm = byId('global-form');
  const percent = byId('g-percent');
  const syncPercent = () => {
    percent.disabled = globalForm.elements.mode.value !== 'ENFORCED';
  };
  globalForm.addEventListener('change', syncPercent);
  globalForm.addEventListener('input', () => { globalForm.dataset.dirty = '1'; });
  action('global-form', 'g-button', () => hasSettings() && percentValid(), (body) => {
    const change = { mode: globalForm.elements.mode.value, ...body };
    if (change.mode === 'ENFORCED' && percent.value.trim() !== '') {
      change.enforce_percent = Number(percent.value);
    }
    return call('PUT', 'v1/enforcement', change);
  });
  function percentValid() {
    if (percent.disabled || percent.value.trim() === '') return true;
    const n = Number(percent.value);
    return Number.isInteger(n) && n >= 0 && n <= 100;
  }

  const endpointForm = byId('endpoint-form');
  action('endpoint-form', 'e-button', () => hasSettings() && endpointForm.elements.name.value.trim() !== '', (body) => {
    const name = encodeURIComponent(endpointForm.elements.name.value.trim());
    const mode = endpointForm.elements.mode.value;
    return mode === ''
      ? call('DELETE', `v1/enforcement/endpoints/${name}`, body)
      : call('PUT', `v1/enforcement/endpoints/${name}`, { mode, ...body });
  });

  return {
    /** Called after every read of the settings and the rollout report. */
    update() {
      const settings = page.settings();
      const rec = page.recommendation();
      if (settings) {
        byId('kill-button').textContent = settings.kill_switch
          ? 'Turn the kill switch off (the configured modes apply again)'
          : 'Turn the kill switch on (allow every check)';
        byId('kill-button').classList.toggle('danger', !settings.kill_switch);
        // The form follows the settings until the operator starts editing it.
        if (globalForm.dataset.dirty !== '1') {
          globalForm.elements.mode.value = settings.mode;
          percent.value = settings.enforce_percent ?? '';
        }
      }
      byId('apply-button').textContent = rec?.action === 'advance' && rec.next
        ? `Apply the recommended next step: ${stepLabel(rec.next)}`
        : 'Apply the recommended next step (none now: hold)';
      syncPercent();
      for (const f of forms) f.sync();
    },
    reset() {
      for (const f of forms) {
        f.form.reset();
        f.form.dataset.dirty = '';
        f.status.textContent = '';
        f.status.className = 'action-status';
        f.sync();
      }
    },
  };
}
