// What console.js and admin-forms.js tell the user about a change: an API error in the console's
// language with the field it is about, or a confirmation that survives the reload after a save.
// The strings come from the layout (data-i18n-messages); nothing here is inline code.

const NOTICE_KEY = 'zhinian-notice';

function messages() {
  try {
    return JSON.parse(document.querySelector('[data-i18n-messages]')?.dataset.i18nMessages ?? '{}');
  } catch {
    return {};
  }
}

const fill = (text, name, value) => String(text ?? `{${name}}`).replace(`{${name}}`, value);

/** The form control an error's field names (`allowedEngines[0]` → `allowedEngines`), if the form has one. */
function controlFor(form, field) {
  if (!form || !field) return null;
  const base = field.split(/[.[]/)[0];
  for (const name of [field, base]) {
    const el = form.querySelector(`[name="${CSS.escape(name)}"]`);
    if (el) return el;
  }
  return null;
}

/** The visible label of a control: its <label for>, else the label around it. */
function labelOf(control) {
  const byFor = control.id ? document.querySelector(`label[for="${CSS.escape(control.id)}"]`) : null;
  const label = byFor ?? control.closest('label');
  if (!label) return null;
  const clone = label.cloneNode(true);
  for (const inner of clone.querySelectorAll('input, select, textarea')) inner.remove();
  const text = clone.textContent.replace(/\s+/g, ' ').trim();
  return text || null;
}

/**
 * The lines to show for a refused change: what went wrong (from the error's `code`), the field
 * (the answer's `field`, else the `name:` an older message starts with), and the server's words.
 */
export function describeError(data, status, form) {
  const m = messages();
  const code = typeof data?.code === 'string' ? data.code : null;
  const what = (code && m.errors?.[code]) || fill(m.other, 'status', String(status));
  let field = typeof data?.field === 'string' && data.field ? data.field : null;
  if (!field && code === 'invalid_request' && typeof data?.error === 'string') field = /^([A-Za-z_][\w.[\]]*): /.exec(data.error)?.[1] ?? null;
  let line = fill(fill(m.failedLine ?? '{failed}: {what}', 'failed', m.failed ?? 'Failed'), 'what', what);
  if (field) {
    const control = controlFor(form, field);
    const label = control ? labelOf(control) : null;
    line += ` — ${fill(m.field, 'field', label ? `${label} (${field})` : field)}`;
    if (control) {
      control.setAttribute('aria-invalid', 'true');
      control.focus();
    }
  }
  const lines = [line];
  if (typeof data?.error === 'string' && data.error) lines.push(fill(m.detail, 'detail', data.error));
  return lines;
}

/** A failure the request never got an answer for (network down, server gone). */
export function describeNetworkError() {
  const m = messages();
  return [fill(fill(m.failedLine ?? '{failed}: {what}', 'failed', m.failed ?? 'Failed'), 'what', m.network ?? 'network error')];
}

export function showError(lines) {
  const region = document.querySelector('[data-flash]');
  if (!region) return;
  region.replaceChildren(
    ...lines.map((text, i) => {
      const line = document.createElement('div');
      line.textContent = text;
      if (i > 0) line.className = 'small';
      return line;
    }),
  );
  region.hidden = false;
  region.scrollIntoView({ block: 'nearest' });
}

export function clearError(form) {
  const region = document.querySelector('[data-flash]');
  if (region) region.hidden = true;
  for (const el of form?.querySelectorAll('[aria-invalid="true"]') ?? []) el.removeAttribute('aria-invalid');
}

/** Reloads the page and shows `notice` (or a plain "done") on the page that comes back. */
export function reloadWithNotice(notice) {
  try {
    sessionStorage.setItem(NOTICE_KEY, notice || messages().done || 'OK');
  } catch {
    // Storage refused (private mode): the reload still shows the new state.
  }
  location.reload();
}

/** Shows a notice left by reloadWithNotice, once. */
export function showPendingNotice() {
  let notice = null;
  try {
    notice = sessionStorage.getItem(NOTICE_KEY);
    sessionStorage.removeItem(NOTICE_KEY);
  } catch {
    return;
  }
  const region = document.querySelector('[data-notice]');
  if (!notice || !region) return;
  region.textContent = notice;
  region.hidden = false;
}

/**
 * Shows the one-time secrets of an answer in the layout's dialog: a key (`secret`, `key.secret`)
 * and, when a client was just made, its own webhook signing secret (`webhookSecret`). Closing it
 * reloads the page with `notice`. False when the answer has no secret.
 */
export function showSecrets(data, notice) {
  const secret = data?.secret ?? data?.key?.secret;
  const webhookSecret = typeof data?.webhookSecret === 'string' ? data.webhookSecret : null;
  const dialog = document.querySelector('[data-secret-dialog]');
  if (typeof secret !== 'string' || !dialog) return false;
  dialog.querySelector('[data-secret-value]').textContent = secret;
  const block = dialog.querySelector('[data-secret-webhook-block]');
  if (block) {
    block.hidden = webhookSecret === null;
    block.querySelector('[data-secret-webhook]').textContent = webhookSecret ?? '';
  }
  dialog.addEventListener('close', () => reloadWithNotice(notice), { once: true });
  dialog.showModal();
  return true;
}
