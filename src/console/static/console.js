// The console's only script (an ES module; the CSP allows no inline code). It adds the CSRF
// header to htmx requests and to its own, runs `data-action-url` buttons against the JSON API,
// shows one-time secrets in a dialog, and prints <time> elements in the viewer's locale.

import { clearError, describeError, describeNetworkError, reloadWithNotice, showError, showPendingNotice, showSecrets } from './messages.js';

const csrf = () => document.querySelector('meta[name="csrf-token"]')?.getAttribute('content') ?? '';
const strings = () => document.querySelector('[data-i18n-failed]')?.dataset ?? {};

document.addEventListener('htmx:configRequest', (event) => {
  event.detail.headers['X-CSRF-Token'] = csrf();
});

function localTimes(root) {
  const lang = document.documentElement.lang || undefined;
  for (const el of root.querySelectorAll('time[datetime]')) {
    if (el.dataset.local === '1') continue;
    const date = new Date(el.getAttribute('datetime'));
    if (Number.isNaN(date.getTime())) continue;
    el.title = el.getAttribute('datetime');
    el.textContent = date.toLocaleString(lang);
    el.dataset.local = '1';
  }
}

async function post(url, body) {
  const response = await fetch(url, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'content-type': 'application/json', 'x-csrf-token': csrf(), accept: 'application/json' },
    body: JSON.stringify(body ?? {}),
  });
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  return { response, data };
}

/** An action button's request is under way: it reloads the page itself when done. */
let acting = false;

async function runAction(button) {
  const confirmText = button.dataset.confirm;
  if (confirmText !== undefined && !window.confirm(confirmText || strings().i18nConfirm || '?')) return;
  let body = {};
  if (button.dataset.actionBody) {
    try {
      body = JSON.parse(button.dataset.actionBody);
    } catch {
      body = {};
    }
  }
  button.disabled = true;
  acting = true;
  clearError();
  try {
    const { response, data } = await post(button.dataset.actionUrl, body);
    if (!response.ok) {
      showError(describeError(data, response.status, null));
      return;
    }
    if (showSecrets(data, button.dataset.done)) return;
    reloadWithNotice(button.dataset.done);
  } catch {
    showError(describeNetworkError());
  } finally {
    button.disabled = false;
    acting = false;
  }
}

document.addEventListener('click', async (event) => {
  const target = event.target instanceof Element ? event.target : null;
  if (!target) return;
  const action = target.closest('[data-action-url]');
  if (action) {
    event.preventDefault();
    await runAction(action);
    return;
  }
  if (target.closest('[data-signout]')) {
    event.preventDefault();
    try {
      await post('/admin/auth/logout', {});
    } finally {
      location.href = '/admin/auth/signed-out';
    }
    return;
  }
  const copy = target.closest('[data-copy-secret]');
  if (copy) {
    const value = document.querySelector('[data-secret-value]')?.textContent ?? '';
    try {
      await navigator.clipboard.writeText(value);
      copy.textContent = copy.dataset.copiedLabel || copy.textContent;
    } catch {
      const range = document.createRange();
      range.selectNodeContents(document.querySelector('[data-secret-value]'));
      getSelection()?.removeAllRanges();
      getSelection()?.addRange(range);
    }
    return;
  }
  if (target.closest('[data-close-secret]')) target.closest('dialog')?.close();
});

// Selects that submit their form when changed (e.g. the overview's range switch), without inline handlers.
document.addEventListener('change', (event) => {
  const el = event.target;
  if (el instanceof HTMLSelectElement && el.dataset.autosubmit !== undefined) el.form?.requestSubmit();
});

document.addEventListener('htmx:afterSwap', (event) => localTimes(event.target instanceof Element ? event.target : document));
document.addEventListener('htmx:oobAfterSwap', (event) => localTimes(event.target instanceof Element ? event.target : document));
if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', () => localTimes(document));
else localTimes(document);
showPendingNotice();

// The top menu on a narrow screen: the button opens and closes it (wide screens never show the button).
const top = document.querySelector('[data-top]');
function setMenu(open) {
  top?.classList.toggle('open', open);
  document.querySelector('[data-menu-toggle]')?.setAttribute('aria-expanded', String(open));
}
document.addEventListener('click', (event) => {
  const target = event.target instanceof Element ? event.target : null;
  if (target?.closest('[data-menu-toggle]')) setMenu(!top?.classList.contains('open'));
});
document.addEventListener('keydown', (event) => {
  if (event.key === 'Escape' && top?.classList.contains('open')) setMenu(false);
});

// Time filters: a datetime-local input is zone-less, so the form sends ISO times with the
// viewer's offset instead (hidden fields), and shows a bookmarked ISO time in local time.
const pad = (n) => String(n).padStart(2, '0');
function localInputValue(date) {
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}
function isoWithOffset(date) {
  const offset = -date.getTimezoneOffset();
  const sign = offset >= 0 ? '+' : '-';
  const abs = Math.abs(offset);
  return `${localInputValue(date)}:${pad(date.getSeconds())}${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}
for (const input of document.querySelectorAll('form[data-local-times] input[type="datetime-local"][data-iso-value]')) {
  const given = input.dataset.isoValue;
  if (given && /[zZ]|[+-]\d\d:\d\d$/.test(given)) {
    const date = new Date(given);
    if (!Number.isNaN(date.getTime())) input.value = localInputValue(date);
  }
}
document.addEventListener('submit', (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || form.dataset.localTimes === undefined) return;
  for (const input of form.querySelectorAll('input[type="datetime-local"]')) {
    if (!input.value) continue;
    const date = new Date(input.value);
    if (Number.isNaN(date.getTime())) continue;
    const hidden = document.createElement('input');
    hidden.type = 'hidden';
    hidden.name = input.name;
    hidden.value = isoWithOffset(date);
    input.disabled = true;
    form.append(hidden);
  }
  // Empty fields stay out of the bookmarkable URL.
  for (const el of form.elements) if ((el instanceof HTMLInputElement || el instanceof HTMLSelectElement) && el.name && el.value === '' && !el.disabled) el.disabled = true;
});
// Back from the next page (bfcache): the form as the user left it.
window.addEventListener('pageshow', () => {
  for (const form of document.querySelectorAll('form[data-local-times]')) {
    for (const hidden of form.querySelectorAll('input[type="hidden"]')) if (form.querySelector(`input[type="datetime-local"][name="${hidden.name}"]`)) hidden.remove();
    for (const el of form.elements) el.disabled = false;
  }
});

// Live status: the job page and the jobs list's running rows follow the job events
// (GET /admin/api/jobs/…/events) instead of polling. A change of status (or, on the job page, of
// why the job waits) brings the server's fresh rendering (the page, or the row); progress changes
// in place.
function showProgress(cell, progress) {
  if (!cell || progress === null || progress === undefined) return;
  const bar = document.createElement('progress');
  bar.max = 100;
  bar.value = progress;
  cell.replaceChildren(bar, ` ${progress}%`);
}

function followJobPage() {
  const head = document.querySelector('[data-live-job-page]');
  if (!head || typeof EventSource === 'undefined') return;
  const source = new EventSource(`/admin/api/jobs/${encodeURIComponent(head.dataset.liveJobPage)}/events`);
  source.addEventListener('job', (event) => {
    const job = JSON.parse(event.data);
    // A new status or a new reason to wait: the server's rendering (in the page's language).
    const waiting = job.statusDetail ? `${job.statusDetail.code} ${job.statusDetail.retryAt ?? ''}` : '';
    if (job.status !== head.dataset.status || waiting !== head.dataset.waiting) {
      source.close();
      // A cancel from this page reloads with its notice: not twice.
      if (!acting) location.reload();
      return;
    }
    showProgress(document.querySelector('[data-live-progress]'), job.progress);
  });
}

async function refreshRow(row, id) {
  const response = await fetch(`/admin/jobs/${encodeURIComponent(id)}/row`, { credentials: 'same-origin' });
  if (!response.ok) return;
  const template = document.createElement('template');
  template.innerHTML = (await response.text()).trim();
  const fresh = template.content.firstElementChild;
  // The row as it is now (an earlier refresh may have replaced it meanwhile).
  const current = document.getElementById(row.id);
  if (!fresh || !current) return;
  current.replaceWith(fresh);
  localTimes(fresh);
}

function followRows() {
  const ids = [...document.querySelectorAll('tr[data-live-job]')].map((row) => row.dataset.liveJob);
  if (ids.length === 0 || typeof EventSource === 'undefined') return;
  const source = new EventSource(`/admin/api/jobs/events?ids=${ids.map(encodeURIComponent).join(',')}`);
  source.addEventListener('job', async (event) => {
    const job = JSON.parse(event.data);
    const row = document.querySelector(`tr[data-live-job="${CSS.escape(job.id)}"]`);
    if (!row) return;
    if (job.status === row.dataset.status) showProgress(row.querySelector('[data-live-progress]'), job.progress);
    else await refreshRow(row, job.id);
    // Every row finished: nothing left to follow (the server ends the stream too; this stops the reconnect).
    if (!document.querySelector('tr[data-live-job]')) source.close();
  });
}

followJobPage();
followRows();
