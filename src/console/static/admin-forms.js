// Forms of the admin screens that send JSON to the console API (no inline code: the CSP allows
// none). A `form[data-action-form]` is sent to its `action` with `data-action-method` (default
// POST) and the X-CSRF-Token header; fields become JSON:
//   data-json="number"   empty → null, else a number
//   data-json="boolean"  a checkbox: true/false
//   data-json="optional" empty → left out
//   data-json="list"     checked boxes of that name → array of values
//   data-json="all"      a checkbox of the same name: checked → null (e.g. every engine)
//   data-json="datetime" a datetime-local input: empty → left out, else the ISO time (viewer's zone)
//   (none)               the text as it is
// On success the page reloads and shows the form's `data-done` (or a plain "done"), after a
// `secret`/`key.secret` in the answer is shown once in the layout's secret dialog. A refusal is
// shown in the console's language, naming the field (messages.js).

import { clearError, describeError, describeNetworkError, reloadWithNotice, showError, showSecrets } from './messages.js';

const csrf = () => document.querySelector('meta[name="csrf-token"]')?.getAttribute('content') ?? '';

function serialize(form) {
  const body = {};
  const lists = new Map();
  for (const el of form.elements) {
    if (!(el instanceof HTMLInputElement || el instanceof HTMLSelectElement || el instanceof HTMLTextAreaElement) || !el.name) continue;
    const kind = el.dataset.json;
    if (kind === 'list') {
      if (!lists.has(el.name)) lists.set(el.name, { all: false, values: [] });
      if (el.checked) lists.get(el.name).values.push(el.value);
    } else if (kind === 'all') {
      if (!lists.has(el.name)) lists.set(el.name, { all: false, values: [] });
      lists.get(el.name).all = el.checked;
    } else if (kind === 'boolean') body[el.name] = el.checked;
    else if (kind === 'number') body[el.name] = el.value.trim() === '' ? null : Number(el.value);
    else if (kind === 'datetime') {
      if (el.value === '') continue;
      const date = new Date(el.value);
      // An impossible date goes as typed: the server names the field.
      body[el.name] = Number.isNaN(date.getTime()) ? el.value : date.toISOString();
    }
    else if (kind === 'optional') {
      if (el.value.trim() !== '') body[el.name] = el.value.trim();
    } else body[el.name] = el.value;
  }
  for (const [name, list] of lists) body[name] = list.all ? null : list.values;
  return body;
}

document.addEventListener('submit', async (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || form.dataset.actionForm === undefined) return;
  event.preventDefault();
  const button = form.querySelector('[type="submit"]');
  if (button) button.disabled = true;
  clearError(form);
  try {
    const response = await fetch(form.getAttribute('action'), {
      method: (form.dataset.actionMethod || 'POST').toUpperCase(),
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf(), accept: 'application/json' },
      body: JSON.stringify(serialize(form)),
    });
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      showError(describeError(data, response.status, form));
      return;
    }
    if (showSecrets(data, form.dataset.done)) return;
    reloadWithNotice(form.dataset.done);
  } catch {
    showError(describeNetworkError());
  } finally {
    if (button) button.disabled = false;
  }
});
