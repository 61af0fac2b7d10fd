// The gateway's admin UI: one page, no framework. Every call is the documented admin API with the master
// key as bearer; the key lives only in the `masterKey` variable below (never a cookie, URL or storage), so
// reloading the page signs out. The DOM is built with createElement / textContent only (no innerHTML).
'use strict';

(function () {
  const PAGE_SIZE = 25;
  const DAY_MS = 86400000;
  const LAST = 1000000; // a page number past the end: the list shows its last page
  let masterKey = null; // the only place the master key is kept
  let busyCount = 0;
  let pendingReveal = null; // a key just created, shown once by the next page drawn
  const view = { keys: { page: 1, team: '' }, teams: { page: 1 }, users: { page: 1 }, customers: { page: 1 }, models: { page: 1 },
    team: { page: 1, members: 1 }, spend: { page: 1 } };

  const $ = (sel, root = document) => root.querySelector(sel);

  /** Appends the children that are not null (nested lists flattened). */
  function put(parent, ...children) {
    parent.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
    return parent;
  }

  // ---- DOM and API helpers ------------------------------------------------------------------------------

  /** el('button', {class: 'btn', onclick: fn}, 'Save'): attributes, `on*` listeners, text or node children. */
  function el(tag, attrs, ...children) {
    const svg = tag.startsWith('svg:');
    const node = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4)) : document.createElement(tag);
    let value;
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else if (k === 'value') value = v;
      else if (k === 'checked' || k === 'disabled' || k === 'selected') node[k] = true;
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    put(node, children);
    if (value !== undefined) node.value = value; // after the options of a <select> exist
    return node;
  }

  /** An error of the API: its message, HTTP status and, when it names one, the request field at fault. */
  class ApiError extends Error {
    constructor(message, status, param) { super(message); this.status = status; this.param = param || null; }
  }

  function setBusy(delta) {
    busyCount = Math.max(0, busyCount + delta);
    const on = busyCount > 0;
    $('#busy').hidden = !on;
    document.body.classList.toggle('is-busy', on);
    $('#app').setAttribute('aria-busy', on ? 'true' : 'false');
  }

  /** Calls the admin API with the master key; answers the parsed JSON or throws the API's error message. */
  async function api(method, path, body, key = masterKey) {
    setBusy(1);
    try {
      const opts = { method, cache: 'no-store', headers: { Authorization: 'Bearer ' + key } };
      if (body !== undefined) {
        opts.headers['Content-Type'] = 'application/json';
        opts.body = JSON.stringify(body);
      }
      let res;
      try {
        res = await fetch(path, opts);
      } catch (e) {
        throw new ApiError('The request failed (' + e.message + ')', 0);
      }
      const text = await res.text();
      let data = null;
      try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
      if (!res.ok) {
        const msg = (data && data.error && data.error.message) || text || res.statusText || 'HTTP ' + res.status;
        const err = new ApiError(msg, res.status, data && data.error && data.error.param);
        if (res.status === 401 && key === masterKey && masterKey) setTimeout(() => signOut('The gateway refused the master key: ' + msg), 0);
        throw err;
      }
      return data;
    } finally {
      setBusy(-1);
    }
  }

  /** `?a=1&b=x` of the non-empty values. */
  function qs(params) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== '' && v !== null && v !== undefined) p.set(k, String(v));
    const s = p.toString();
    return s ? '?' + s : '';
  }

  function notify(message, kind = 'error') {
    const box = el('div', { class: 'notice ' + kind, role: kind === 'error' ? 'alert' : 'status' },
      el('span', {}, message),
      el('button', { type: 'button', class: 'btn ghost small', 'aria-label': 'Dismiss', onclick: () => box.remove() }, '×'));
    const area = $('#notice');
    area.append(box);
    while (area.children.length > 3) area.firstChild.remove();
    if (kind !== 'error') setTimeout(() => box.remove(), 6000);
  }

  /** Runs `fn` with `button` disabled meanwhile; shows the API's error as a notice. */
  async function act(button, fn, okMessage) {
    if (button) button.disabled = true;
    try {
      await fn();
      if (okMessage) notify(okMessage, 'ok');
    } catch (e) {
      notify(e.message);
    } finally {
      if (button) {
        button.disabled = false;
        // Disabling it lost the focus: back on it, and from it onto its successor when its table is redrawn.
        if (focusLost() && button.isConnected) button.focus();
      }
    }
  }

  function focusLost() {
    const a = document.activeElement;
    return !a || a === document.body || !a.isConnected;
  }

  // ---- formatting -----------------------------------------------------------------------------------------

  const dash = '—';

  function money(v) {
    if (v === null || v === undefined) return dash;
    if (v === 0) return '$0';
    if (Math.abs(v) >= 1) return '$' + v.toFixed(2);
    if (Math.abs(v) >= 0.01) return '$' + v.toFixed(4).replace(/0{1,2}$/, '');
    const digits = Math.min(10, Math.ceil(-Math.log10(Math.abs(v))) + 1);
    return '$' + v.toFixed(digits).replace(/0+$/, '');
  }

  /** A number without an exponent (`1.5e-7` is `0.00000015`), for inputs. */
  function plain(v) { return Math.abs(v) >= 1e-6 || v === 0 ? String(v) : v.toFixed(15).replace(/0+$/, ''); }

  function num(v) { return v === null || v === undefined ? dash : Number(v).toLocaleString('en-US'); }

  /** An RFC 3339 time or unix ms as `YYYY-MM-DD HH:MM` UTC. */
  function when(v) {
    if (v === null || v === undefined || v === '') return dash;
    const d = new Date(v);
    return isNaN(d) ? String(v) : d.toISOString().slice(0, 16).replace('T', ' ');
  }

  function day(ms) { return new Date(ms).toISOString().slice(0, 10); }

  function spendCell(spend, max) {
    const text = el('span', { class: 'spend' }, money(spend), max !== null && max !== undefined ? ' / ' + money(max) : '');
    if (max === null || max === undefined || max <= 0) return text;
    const pct = Math.min(100, (spend / max) * 100);
    return el('div', { class: 'spend-cell' }, text,
      el('progress', { max: '100', value: String(pct), class: pct >= 90 ? 'over' : '', 'aria-label': Math.round(pct) + '% of budget used' }));
  }

  function limits(r) {
    const parts = [];
    if (r.rpm_limit != null) parts.push('rpm ' + num(r.rpm_limit));
    if (r.tpm_limit != null) parts.push('tpm ' + num(r.tpm_limit));
    if (r.max_parallel_requests != null) parts.push('parallel ' + num(r.max_parallel_requests));
    return parts.length ? parts.join(' · ') : dash;
  }

  function models(list) {
    return list && list.length ? list.map((m) => el('span', { class: 'chip' }, m)) : el('span', { class: 'muted' }, 'all');
  }

  function badge(text, kind) { return el('span', { class: 'badge ' + kind }, text); }

  function mono(text, title) { return el('code', { class: 'mono', title: title || null }, text); }

  // ---- building blocks ------------------------------------------------------------------------------------

  function pageHeader(title, subtitle, ...actions) {
    return el('div', { class: 'page-head' },
      el('div', {}, el('h1', { tabindex: '-1' }, title), subtitle ? el('p', { class: 'muted' }, subtitle) : null),
      el('div', { class: 'actions' }, actions));
  }

  function button(label, onclick, cls = '', attrs = {}) {
    return el('button', Object.assign({ type: 'button', class: 'btn ' + cls, onclick }, attrs), label);
  }

  /** A row's small button, named with its row (`Delete key ci-bot`); `focusId` finds it again after a redraw. */
  function rowButton(label, what, focusId, onclick, cls = '') {
    return button(label, onclick, 'small ' + cls, { 'aria-label': label + ' ' + what, 'data-focus': focusId });
  }

  /** A table of `rows` with `columns` [{label, cell(row)}], or the empty state when there are none. */
  function table(columns, rows, empty, rowAttrs) {
    if (!rows.length) return el('div', { class: 'empty' }, empty);
    return el('div', { class: 'table-wrap' },
      el('table', {},
        el('thead', {}, el('tr', {}, columns.map((c) => el('th', { scope: 'col', class: c.cls || null }, c.label)))),
        el('tbody', {}, rows.map((r) => el('tr', rowAttrs ? rowAttrs(r) : {},
          columns.map((c) => el('td', { class: c.cls || null }, c.cell(r))))))));
  }

  function pager(page, totalPages, total, noun, go) {
    const nouns = noun + 's';
    noun = total === 1 ? noun : nouns;
    if (totalPages <= 1) return el('p', { class: 'muted pager-info' }, num(total) + ' ' + noun);
    return el('nav', { class: 'pager', 'aria-label': 'Pages of ' + nouns },
      button('← Previous', () => go(page - 1), 'ghost', { disabled: page <= 1, 'data-focus': 'prev:' + nouns }),
      el('span', { class: 'muted' }, 'Page ' + page + ' of ' + totalPages + ' · ' + num(total) + ' ' + noun),
      button('Next →', () => go(page + 1), 'ghost', { disabled: page >= totalPages, 'data-focus': 'next:' + nouns }));
  }

  /** Page `page` of `all` (clamped to the pages there are), for the lists the API answers whole. */
  function slice(all, page) {
    const pages = Math.max(1, Math.ceil(all.length / PAGE_SIZE));
    page = Math.min(Math.max(1, page), pages);
    return { rows: all.slice((page - 1) * PAGE_SIZE, page * PAGE_SIZE), page, pages };
  }

  function errorBox(message, retry) {
    return el('div', { class: 'panel error-box', role: 'alert' }, el('strong', {}, 'Could not load: '), message,
      retry ? el('div', {}, button('Retry', retry, 'ghost')) : null);
  }

  const loads = new WeakMap(); // box → number of its latest load: an older one that ends later draws nothing

  /** A loader: draws into `box` what `fn` returns, or the API's error with a Retry button. When the focus
   * was in the old content, it goes to the new control of the same `data-focus` (else the page's h1). */
  async function load(box, fn) {
    const seq = (loads.get(box) || 0) + 1;
    loads.set(box, seq);
    box.setAttribute('aria-busy', 'true');
    if (!box.firstChild) box.append(el('p', { class: 'muted loading' }, 'Loading…'));
    let out;
    try {
      out = await fn();
    } catch (e) {
      out = errorBox(e.message, () => load(box, fn));
    }
    if (loads.get(box) !== seq) return;
    const had = document.activeElement;
    const lost = focusLost() || box.contains(had);
    const key = lost && had && had.dataset ? had.dataset.focus : null;
    box.replaceChildren();
    put(box, out);
    box.setAttribute('aria-busy', 'false');
    if (!lost) return;
    const again = key && box.querySelector('[data-focus="' + CSS.escape(key) + '"]:not(:disabled)');
    const h1 = $('#app h1');
    if (again) again.focus();
    else if (h1) h1.focus({ preventScroll: true });
  }

  let fieldSeq = 0;

  /** One labelled input: {name, label, type: text|number|money|list|select|checkbox|password|date, value, options
   * ([value, label, disabled]), hint}. */
  function field(f) {
    const id = 'f' + ++fieldSeq;
    const hint = f.hint ? el('small', { class: 'hint', id: id + 'h' }, f.hint) : null;
    const common = { id, name: f.name, 'aria-describedby': hint ? id + 'h' : null, required: f.required || null };
    let input;
    if (f.type === 'select') {
      input = el('select', Object.assign({ value: f.value == null ? '' : f.value }, common),
        f.options.map(([v, label, disabled]) => el('option', { value: v, disabled: !!disabled }, label)));
    } else if (f.type === 'checkbox') {
      input = el('input', Object.assign({ type: 'checkbox', checked: !!f.value }, common));
      return el('div', { class: 'field check' }, input, el('label', { for: id }, f.label), hint);
    } else {
      const type = { number: 'number', money: 'number', password: 'password', date: 'date' }[f.type] || 'text';
      let value = f.value == null ? '' : f.value;
      if (f.type === 'money' && typeof value === 'number') value = plain(value);
      if (f.type === 'list') value = (f.value || []).join(', ');
      input = el('input', Object.assign({
        // Password managers ignore `off` on password fields and would fill in the saved master key: `new-password`
        // keeps them out of the upstream secrets (they may still offer to generate one).
        type, value: String(value), placeholder: f.placeholder || null, autocomplete: type === 'password' ? 'new-password' : 'off',
        step: f.type === 'money' ? 'any' : f.type === 'number' ? '1' : null,
        min: f.type === 'money' || f.type === 'number' ? '0' : null,
      }, common));
    }
    return el('div', { class: 'field' }, el('label', { for: id }, f.label), input, hint);
  }

  /** The typed value of each field of a form: '' is null, numbers are numbers, lists are arrays. */
  function readFields(form, fields) {
    const out = {};
    for (const f of fields) {
      const input = form.elements.namedItem(f.name);
      if (f.type === 'checkbox') { out[f.name] = input.checked; continue; }
      if (input.validity && input.validity.badInput) throw new ApiError(f.label + ': not a number', 0, f.name);
      const raw = input.value.trim();
      if (f.type === 'list') out[f.name] = raw ? raw.split(',').map((s) => s.trim()).filter(Boolean) : [];
      else if (raw === '') out[f.name] = null;
      else if (f.type === 'number' || f.type === 'money') out[f.name] = Number(raw);
      else out[f.name] = raw;
    }
    return out;
  }

  /** Only the values that differ from `before` (an update then changes only what was edited). */
  function changed(values, before) {
    const out = {};
    const norm = (v) => JSON.stringify(v === undefined || v === '' ? null : v);
    for (const [k, v] of Object.entries(values)) if (norm(v) !== norm(before[k])) out[k] = v;
    return out;
  }

  /** Marks field `name` of `form` invalid and focuses it (after clearing the marks of an earlier try). */
  function markInvalid(form, name) {
    form.querySelectorAll('[aria-invalid]').forEach((x) => { x.removeAttribute('aria-invalid'); x.classList.remove('invalid'); });
    const input = name ? form.elements.namedItem(name) : null;
    if (!input || typeof input.focus !== 'function') return;
    input.setAttribute('aria-invalid', 'true');
    input.classList.add('invalid');
    input.focus();
  }

  /** A modal form; `submit(values)` runs the call: its error shows in the dialog (on the field it names, if
   * any), success closes it. The focus then goes back to the opener (see `load` for an opener redrawn). */
  function dialog({ title, intro, fields = [], submitLabel = 'Save', danger = false, submit }) {
    const opener = document.activeElement;
    const error = el('div', { class: 'form-error', role: 'alert', hidden: true });
    const ok = el('button', { type: 'submit', class: 'btn ' + (danger ? 'danger' : 'primary') }, submitLabel);
    const cancel = button('Cancel', () => dlg.close(), 'ghost');
    const form = el('form', { class: 'form', novalidate: true },
      el('h2', {}, title), intro ? el('p', { class: 'intro' }, intro) : null,
      el('div', { class: 'fields' }, fields.map(field)), error, el('div', { class: 'form-actions' }, cancel, ok));
    const dlg = el('dialog', { class: 'dialog', 'aria-label': title }, form);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      error.hidden = true;
      ok.disabled = cancel.disabled = true;
      try {
        await submit(readFields(form, fields));
        dlg.close();
      } catch (e) {
        error.textContent = e.message;
        error.hidden = false;
        markInvalid(form, e.param);
      } finally {
        ok.disabled = cancel.disabled = false;
      }
    });
    dlg.addEventListener('close', () => {
      dlg.remove();
      if (focusLost() && opener && opener.isConnected) opener.focus();
    });
    document.body.append(dlg);
    dlg.showModal();
    return dlg;
  }

  function confirmDelete(what, detail, run) {
    dialog({ title: 'Delete ' + what + '?', intro: detail + ' This cannot be undone.', submitLabel: 'Delete', danger: true, submit: run });
  }

  /** The one-time display of a new key, with a Copy button. */
  function revealPanel(r) {
    const input = el('input', { type: 'text', readonly: true, value: r.key, id: 'new-key', class: 'mono', 'aria-label': 'New key' });
    const status = el('span', { class: 'muted', role: 'status' });
    const copy = button('Copy', async () => {
      try {
        await navigator.clipboard.writeText(r.key);
        status.textContent = 'Copied.';
      } catch (_) {
        input.focus();
        input.select();
        status.textContent = 'Selected: press Ctrl+C (⌘C) to copy.';
      }
    }, 'primary');
    const panel = el('section', { class: 'panel reveal', 'aria-labelledby': 'reveal-title' },
      el('h2', { id: 'reveal-title' }, 'New key' + (r.label ? ' “' + r.label + '”' : '')),
      el('p', {}, 'Copy it now: this is the only time it is shown. The gateway keeps only its hash.'),
      el('div', { class: 'reveal-row' }, input, copy, button('Done', () => { panel.remove(); focusPage(); }, 'ghost')), status);
    copy.setAttribute('data-autofocus', ''); // route() focuses it: the key is copied at once
    return panel;
  }

  function takeReveal() {
    const r = pendingReveal;
    pendingReveal = null;
    return r ? revealPanel(r) : null;
  }

  async function teamsById() {
    const list = await api('GET', '/team/list');
    return { list, byId: new Map(list.map((t) => [t.team_id, t])) };
  }

  function teamName(byId, id) {
    if (!id) return dash;
    const t = byId.get(id);
    return t && t.team_alias ? t.team_alias : id;
  }

  function teamOptions(list, first) {
    return [['', first]].concat(list.map((t) => [t.team_id, t.team_alias ? t.team_alias + ' (' + t.team_id.slice(0, 8) + ')' : t.team_id]));
  }

  // ---- sign in ----------------------------------------------------------------------------------------------

  function renderSignIn(message) {
    $('#nav').hidden = true;
    $('#signout').hidden = true;
    const error = el('p', { class: 'form-error', role: 'alert', id: 'signin-error', hidden: !message }, message || '');
    // Kept `off` (the dialogs' secret fields are `new-password`): a password manager may offer the master key
    // here, the one field where it belongs.
    const input = el('input', { type: 'password', id: 'master-key', name: 'master_key', autocomplete: 'off', required: true, spellcheck: 'false' });
    const submit = el('button', { type: 'submit', class: 'btn primary', id: 'signin' }, 'Sign in');
    const form = el('form', { class: 'panel signin', novalidate: true },
      el('h1', {}, 'Sign in'),
      el('p', { class: 'muted' }, 'Use the gateway’s master key. It is kept in this tab’s memory only: reloading or signing out forgets it.'),
      el('div', { class: 'field' }, el('label', { for: 'master-key' }, 'Master key'), input), error,
      el('div', { class: 'form-actions' }, submit));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const candidate = input.value.trim();
      if (!candidate) { error.textContent = 'Enter the master key.'; error.hidden = false; return; }
      submit.disabled = true;
      error.hidden = true;
      try {
        await api('GET', '/key/list?size=1', undefined, candidate);
        masterKey = candidate;
        input.value = '';
        $('#nav').hidden = false;
        $('#signout').hidden = false;
        if (!/^#\/\w/.test(location.hash)) location.hash = '#/keys';
        else route();
      } catch (e) {
        error.textContent = 'Sign-in refused: ' + e.message;
        error.hidden = false;
        input.select();
      } finally {
        submit.disabled = false;
      }
    });
    $('#app').replaceChildren(form);
    input.focus();
  }

  function signOut(message) {
    masterKey = null;
    pendingReveal = null;
    document.querySelectorAll('dialog').forEach((d) => d.close());
    $('#notice').replaceChildren();
    renderSignIn(message);
  }

  // ---- keys -------------------------------------------------------------------------------------------------

  function keyFields(k, teams) {
    return [
      { name: 'key_alias', label: 'Alias', value: k.key_alias },
      { name: 'team_id', label: 'Team', type: 'select', value: k.team_id || '', options: teamOptions(teams, 'No team') },
      { name: 'user_id', label: 'User id', value: k.user_id },
      { name: 'max_budget', label: 'Max budget (USD)', type: 'money', value: k.max_budget },
      { name: 'budget_duration', label: 'Budget period', value: k.budget_duration, placeholder: '30d', hint: 'e.g. 1h, 1d, 30d; empty: never resets' },
      { name: 'rpm_limit', label: 'Requests per minute', type: 'number', value: k.rpm_limit },
      { name: 'tpm_limit', label: 'Tokens per minute', type: 'number', value: k.tpm_limit },
      { name: 'max_parallel_requests', label: 'Parallel requests', type: 'number', value: k.max_parallel_requests },
      { name: 'models', label: 'Models', type: 'list', value: k.models, hint: 'Comma-separated; empty: every model' },
    ];
  }

  function createKey(teams, presetTeam, after) {
    const fields = keyFields({ team_id: presetTeam }, teams).concat([
      { name: 'duration', label: 'Expires after', placeholder: '30d', hint: 'e.g. 30d; empty: never expires' }]);
    dialog({
      title: 'Create key', fields, submitLabel: 'Create key',
      submit: async (v) => {
        const body = {};
        for (const [k, x] of Object.entries(v)) if (x !== null && !(Array.isArray(x) && !x.length)) body[k] = x;
        const made = await api('POST', '/key/generate', body);
        pendingReveal = { key: made.key, label: made.key_alias };
        after();
      },
    });
  }

  function editKey(k, teams, after) {
    const fields = keyFields(k, teams).concat([
      { name: 'duration', label: 'Expire after (from now)', placeholder: 'unchanged', hint: 'Empty keeps the current expiry' }]);
    dialog({
      title: 'Edit key ' + (k.key_alias || k.key_name), fields,
      submit: async (v) => {
        const body = changed(v, k);
        if (v.duration === null) delete body.duration;
        if (!Object.keys(body).length) return;
        await api('POST', '/key/update', Object.assign({ key: k.token }, body));
        notify('Key updated.', 'ok');
        after();
      },
    });
  }

  function keyStatus(k) {
    if (k.blocked) return badge('Blocked', 'bad');
    if (k.expires && new Date(k.expires) < new Date()) return badge('Expired', 'warn');
    return badge('Active', 'good');
  }

  /** The keys table (all keys, or one team's), with its actions and pager. */
  function keysTable(data, teams, reload, empty) {
    const cols = [
      { label: 'Key', cell: (k) => el('div', {}, el('strong', {}, k.key_alias || dash), el('div', {}, mono(k.key_name, k.token))) },
      { label: 'Team', cell: (k) => teamName(teams.byId, k.team_id) },
      { label: 'User', cell: (k) => k.user_id || dash },
      { label: 'Spend / budget', cell: (k) => spendCell(k.spend, k.max_budget) },
      { label: 'Limits', cell: (k) => limits(k) },
      { label: 'Models', cell: (k) => models(k.models) },
      { label: 'Status', cell: keyStatus },
      { label: 'Expires', cell: (k) => when(k.expires) },
      { label: 'Actions', cls: 'row-actions', cell: (k) => {
        const what = 'key ' + (k.key_alias || k.key_name);
        return [
          rowButton('Edit', what, 'edit:' + k.token, () => editKey(k, teams.list, reload)),
          k.blocked // Block and Unblock share their focus id: the focus moves from one to the other
            ? rowButton('Unblock', what, 'block:' + k.token, (ev) => act(ev.currentTarget, async () => { await api('POST', '/key/unblock', { key: k.token }); reload(); }, 'Key unblocked.'))
            : rowButton('Block', what, 'block:' + k.token, (ev) => act(ev.currentTarget, async () => { await api('POST', '/key/block', { key: k.token }); reload(); }, 'Key blocked.'), 'warn'),
          rowButton('Delete', what, 'delete:' + k.token, () => confirmDelete(what, 'Requests with this key will be refused.',
            async () => { await api('POST', '/key/delete', { keys: [k.token] }); notify('Key deleted.', 'ok'); reload(); }), 'danger'),
        ];
      } },
    ];
    return table(cols, data.keys, empty, (k) => ({ 'data-key': k.token, 'data-alias': k.key_alias || '' }));
  }

  function renderKeys(main) {
    const s = view.keys;
    const body = el('div');
    let teams = { list: [], byId: new Map() };
    const reload = () => load(body, draw);
    // Keys are listed oldest first: a new one is on the last page.
    const create = button('Create key', () => createKey(teams.list, s.team, () => { s.page = LAST; route(); }), 'primary', { id: 'create-key' });
    const teamFilter = el('select', { id: 'key-team-filter' });
    teamFilter.addEventListener('change', () => { s.team = teamFilter.value; s.page = 1; reload(); });
    async function draw() {
      teams = await teamsById();
      if (!teams.byId.has(s.team)) s.team = '';
      teamFilter.replaceChildren(...teamOptions(teams.list, 'All teams').map(([v, l]) => el('option', { value: v }, l)));
      teamFilter.value = s.team;
      const data = await api('GET', '/key/list' + qs({ return_full_object: 'true', page: s.page, size: PAGE_SIZE, team_id: s.team }));
      if (data.total_pages && s.page > data.total_pages) { s.page = data.total_pages; return draw(); }
      const empty = s.team ? 'No keys in this team yet — create one.' : 'No keys yet — create one.';
      return [keysTable(data, teams, reload, [empty, ' ', button('Create key', () => create.click(), 'primary small')]),
        pager(s.page, data.total_pages, data.total_count, 'key', (p) => { s.page = p; reload(); })];
    }
    put(main, pageHeader('Keys', 'Virtual keys: budgets, limits and the models they may call.',
      button('Refresh', reload, 'ghost', { id: 'refresh' }), create),
    takeReveal(),
    el('div', { class: 'toolbar' }, el('label', { for: 'key-team-filter' }, 'Team'), teamFilter), body);
    reload();
  }

  // ---- teams -------------------------------------------------------------------------------------------------

  function teamFields(t) {
    return [
      { name: 'team_alias', label: 'Name', value: t.team_alias },
      { name: 'max_budget', label: 'Max budget (USD)', type: 'money', value: t.max_budget },
      { name: 'budget_duration', label: 'Budget period', value: t.budget_duration, placeholder: '30d', hint: 'e.g. 1d, 30d; empty: never resets' },
      { name: 'rpm_limit', label: 'Requests per minute', type: 'number', value: t.rpm_limit },
      { name: 'tpm_limit', label: 'Tokens per minute', type: 'number', value: t.tpm_limit },
      { name: 'models', label: 'Models', type: 'list', value: t.models, hint: 'Comma-separated; empty: every model' },
    ];
  }

  function createTeam(after) {
    const fields = [{ name: 'team_id', label: 'Team id', placeholder: 'generated if empty' }].concat(teamFields({}));
    dialog({
      title: 'Create team', fields, submitLabel: 'Create team',
      submit: async (v) => {
        const body = {};
        for (const [k, x] of Object.entries(v)) if (x !== null && !(Array.isArray(x) && !x.length)) body[k] = x;
        const t = await api('POST', '/team/new', body);
        notify('Team “' + (t.team_alias || t.team_id) + '” created.', 'ok');
        after(t);
      },
    });
  }

  function editTeam(t, after) {
    dialog({
      title: 'Edit team ' + (t.team_alias || t.team_id), fields: teamFields(t),
      submit: async (v) => {
        const body = changed(v, t);
        if (!Object.keys(body).length) return;
        await api('POST', '/team/update', Object.assign({ team_id: t.team_id }, body));
        notify('Team updated.', 'ok');
        after();
      },
    });
  }

  function deleteTeam(t, after) {
    confirmDelete('team ' + (t.team_alias || t.team_id), 'Its keys are deleted with it.', async () => {
      const r = await api('POST', '/team/delete', { team_ids: [t.team_id] });
      notify('Team deleted' + (r.deleted_keys && r.deleted_keys.length ? ' with ' + r.deleted_keys.length + ' key(s).' : '.'), 'ok');
      after();
    });
  }

  function addMember(t, after) {
    dialog({
      title: 'Add member to ' + (t.team_alias || t.team_id),
      fields: [
        { name: 'user_id', label: 'User id' },
        { name: 'user_email', label: 'Email', hint: 'A user id or an email is needed' },
        { name: 'role', label: 'Role', type: 'select', value: 'user', options: [['user', 'user'], ['admin', 'admin']] },
      ],
      submitLabel: 'Add member',
      submit: async (v) => {
        const member = {};
        for (const [k, x] of Object.entries(v)) if (x !== null) member[k] = x;
        await api('POST', '/team/member_add', { team_id: t.team_id, member });
        notify('Member added.', 'ok');
        after();
      },
    });
  }

  function memberName(m) { return (m.user_id || m.user_email || '?') + (m.role && m.role !== 'user' ? ' (' + m.role + ')' : ''); }

  function renderTeams(main, id) {
    if (id) return renderTeam(main, id);
    const s = view.teams;
    const body = el('div');
    const reload = () => load(body, draw);
    // Teams are listed oldest first: a new one is on the last page.
    const create = button('Create team', () => createTeam(() => { s.page = LAST; reload(); }), 'primary', { id: 'create-team' });
    async function draw() {
      const all = await api('GET', '/team/list');
      const { rows: teams, page, pages } = slice(all, s.page);
      s.page = page;
      const cols = [
        { label: 'Team', cell: (t) => el('div', {}, el('a', { href: '#/teams/' + encodeURIComponent(t.team_id) }, el('strong', {}, t.team_alias || t.team_id)), el('div', {}, mono(t.team_id))) },
        { label: 'Members', cell: (t) => t.members_with_roles.length ? t.members_with_roles.map((m) => el('span', { class: 'chip' }, memberName(m))) : el('span', { class: 'muted' }, 'none') },
        { label: 'Spend / budget', cell: (t) => spendCell(t.spend, t.max_budget) },
        { label: 'Period', cell: (t) => t.budget_duration || dash },
        { label: 'Limits', cell: limits },
        { label: 'Models', cell: (t) => models(t.models) },
        { label: 'Actions', cls: 'row-actions', cell: (t) => {
          const what = 'team ' + (t.team_alias || t.team_id);
          return [
            el('a', { class: 'btn small', href: '#/teams/' + encodeURIComponent(t.team_id), 'aria-label': 'Members & keys of ' + what }, 'Members & keys'),
            rowButton('Edit', what, 'edit:' + t.team_id, () => editTeam(t, reload)),
            rowButton('Delete', what, 'delete:' + t.team_id, () => deleteTeam(t, reload), 'danger')];
        } },
      ];
      return [table(cols, teams, ['No teams yet — create one.', ' ', button('Create team', () => create.click(), 'primary small')],
        (t) => ({ 'data-team': t.team_id })),
      pager(page, pages, all.length, 'team', (p) => { s.page = p; reload(); })];
    }
    put(main, pageHeader('Teams', 'Teams share a budget, limits and a model list across their keys.', button('Refresh', reload, 'ghost'), create), body);
    reload();
  }

  function renderTeam(main, id) {
    const s = view.team;
    if (s.id !== id) { s.id = id; s.page = 1; s.members = 1; }
    const body = el('div');
    const reload = () => load(body, draw);
    async function draw() {
      const teams = await teamsById();
      const t = teams.byId.get(id);
      if (!t) throw new ApiError('team `' + id + '` not found', 404);
      $('h1', main).textContent = t.team_alias || 'Team';
      let keys = await api('GET', '/key/list' + qs({ return_full_object: 'true', team_id: id, page: s.page, size: PAGE_SIZE }));
      if (keys.total_pages && s.page > keys.total_pages) {
        s.page = keys.total_pages;
        keys = await api('GET', '/key/list' + qs({ return_full_object: 'true', team_id: id, page: s.page, size: PAGE_SIZE }));
      }
      const all = t.members_with_roles;
      const mp = slice(all, s.members);
      s.members = mp.page;
      const members = table([
        { label: 'User id', cell: (m) => m.user_id || dash },
        { label: 'Email', cell: (m) => m.user_email || dash },
        { label: 'Role', cell: (m) => m.role },
        { label: 'Actions', cls: 'row-actions', cell: (m) => rowButton('Remove', 'member ' + (m.user_id || m.user_email),
          'remove:' + (m.user_id || m.user_email), () => dialog({
            title: 'Remove ' + (m.user_id || m.user_email) + '?', intro: 'The member leaves the team; their keys stay.', submitLabel: 'Remove', danger: true,
            submit: async () => {
              await api('POST', '/team/member_delete', m.user_id ? { team_id: id, user_id: m.user_id } : { team_id: id, user_email: m.user_email });
              notify('Member removed.', 'ok');
              reload();
            } }), 'danger') },
      ], mp.rows, 'No members yet — add one.');
      return [
        el('div', { class: 'cards' },
          card('Spend / budget', spendCell(t.spend, t.max_budget)),
          card('Budget period', t.budget_duration || dash, t.budget_reset_at ? 'resets ' + when(t.budget_reset_at) : null),
          card('Limits', limits(t)), card('Models', models(t.models))),
        el('section', {}, el('div', { class: 'section-head' }, el('h2', {}, 'Members'),
          button('Add member', () => addMember(t, () => { s.members = LAST; reload(); }), 'small primary', { id: 'add-member', 'data-focus': 'add-member' })),
        members, pager(mp.page, mp.pages, all.length, 'member', (p) => { s.members = p; reload(); })),
        el('section', {}, el('div', { class: 'section-head' }, el('h2', {}, 'Keys'),
          button('Create key in this team', () => createKey(teams.list, id, () => { s.page = LAST; route(); }), 'small primary')),
        keysTable(keys, teams, reload, 'No keys in this team yet — create one.'),
        pager(s.page, keys.total_pages, keys.total_count, 'key', (p) => { s.page = p; reload(); })),
        el('div', { class: 'toolbar' }, button('Edit team', () => editTeam(t, reload), '', { 'data-focus': 'edit-team' }),
          button('Delete team', () => deleteTeam(t, () => { location.hash = '#/teams'; }), 'danger')),
      ];
    }
    put(main, pageHeader('Team', id, el('a', { class: 'btn ghost', href: '#/teams' }, '← All teams'), button('Refresh', reload, 'ghost')),
      takeReveal(), body);
    reload();
  }

  function card(label, value, note) {
    return el('div', { class: 'card' }, el('div', { class: 'card-label' }, label), el('div', { class: 'card-value' }, value),
      note ? el('div', { class: 'muted small' }, note) : null);
  }

  // ---- users -------------------------------------------------------------------------------------------------

  const ROLES = ['internal_user', 'internal_user_viewer', 'proxy_admin', 'proxy_admin_viewer'].map((r) => [r, r]);

  function userFields(u) {
    const roles = ROLES.some(([r]) => r === u.user_role) || !u.user_role ? ROLES : ROLES.concat([[u.user_role, u.user_role]]);
    return [
      { name: 'user_email', label: 'Email', value: u.user_email },
      { name: 'user_alias', label: 'Name', value: u.user_alias },
      { name: 'user_role', label: 'Role', type: 'select', value: u.user_role || 'internal_user', options: roles },
      { name: 'max_budget', label: 'Max budget (USD)', type: 'money', value: u.max_budget },
      { name: 'budget_duration', label: 'Budget period', value: u.budget_duration, placeholder: '30d' },
      { name: 'rpm_limit', label: 'Requests per minute', type: 'number', value: u.rpm_limit },
      { name: 'tpm_limit', label: 'Tokens per minute', type: 'number', value: u.tpm_limit },
      { name: 'models', label: 'Models', type: 'list', value: u.models, hint: 'Comma-separated; empty: every model' },
    ];
  }

  function renderUsers(main) {
    const s = view.users;
    const body = el('div');
    const reload = () => load(body, draw);
    const create = button('Create user', () => dialog({
      title: 'Create user', submitLabel: 'Create user',
      fields: [{ name: 'user_id', label: 'User id', placeholder: 'generated if empty' }].concat(userFields({}),
        [{ name: 'auto_create_key', label: 'Also create a key for this user', type: 'checkbox', value: false }]),
      submit: async (v) => {
        const b = {};
        for (const [k, x] of Object.entries(v)) if (x !== null && !(Array.isArray(x) && !x.length)) b[k] = x;
        const u = await api('POST', '/user/new', b);
        if (u.key) pendingReveal = { key: u.key, label: u.user_id };
        notify('User ' + u.user_id + ' created.', 'ok');
        s.page = LAST; // listed oldest first
        route();
      },
    }), 'primary', { id: 'create-user' });
    async function draw() {
      const data = await api('GET', '/user/list' + qs({ page: s.page, page_size: PAGE_SIZE }));
      if (data.total_pages && s.page > data.total_pages) { s.page = data.total_pages; return draw(); }
      const cols = [
        { label: 'User', cell: (u) => el('div', {}, el('strong', {}, u.user_alias || u.user_id), u.user_alias ? el('div', {}, mono(u.user_id)) : null) },
        { label: 'Email', cell: (u) => u.user_email || dash },
        { label: 'Role', cell: (u) => u.user_role },
        { label: 'Spend / budget', cell: (u) => spendCell(u.spend, u.max_budget) },
        { label: 'Period', cell: (u) => u.budget_duration || dash },
        { label: 'Limits', cell: limits },
        { label: 'Models', cell: (u) => models(u.models) },
        { label: 'Created', cell: (u) => when(u.created_at) },
        { label: 'Actions', cls: 'row-actions', cell: (u) => [
          rowButton('Edit', 'user ' + u.user_id, 'edit:' + u.user_id, () => dialog({
            title: 'Edit user ' + u.user_id, fields: userFields(u),
            submit: async (v) => {
              const b = changed(v, u);
              if (!Object.keys(b).length) return;
              await api('POST', '/user/update', Object.assign({ user_id: u.user_id }, b));
              notify('User updated.', 'ok');
              reload();
            },
          })),
          rowButton('Delete', 'user ' + u.user_id, 'delete:' + u.user_id, () => confirmDelete('user ' + u.user_id, 'Their keys are deleted with them.', async () => {
            await api('POST', '/user/delete', { user_ids: [u.user_id] });
            notify('User deleted.', 'ok');
            reload();
          }), 'danger')] },
      ];
      return [table(cols, data.users, ['No users yet — create one.', ' ', button('Create user', () => create.click(), 'primary small')],
        (u) => ({ 'data-user': u.user_id })),
      pager(s.page, data.total_pages, data.total, 'user', (p) => { s.page = p; reload(); })];
    }
    put(main, pageHeader('Users', 'Internal users: people who own keys and belong to teams.', button('Refresh', reload, 'ghost'), create),
      takeReveal(), body);
    reload();
  }

  // ---- end users (customers) --------------------------------------------------------------------------------

  function customerFields(c) {
    return [
      { name: 'alias', label: 'Name', value: c.alias },
      { name: 'max_budget', label: 'Max budget (USD)', type: 'money', value: c.max_budget },
      { name: 'budget_duration', label: 'Budget period', value: c.budget_duration, placeholder: '30d' },
      { name: 'blocked', label: 'Blocked', type: 'checkbox', value: c.blocked },
    ];
  }

  function renderCustomers(main) {
    const s = view.customers;
    const body = el('div');
    const reload = () => load(body, draw);
    const create = button('Create end user', () => dialog({
      title: 'Create end user', submitLabel: 'Create',
      intro: 'End users are your application’s users, named by the `user` field of a request.',
      fields: [{ name: 'user_id', label: 'End user id', required: true }].concat(customerFields({})),
      submit: async (v) => {
        const b = {};
        for (const [k, x] of Object.entries(v)) if (x !== null && x !== false) b[k] = x;
        await api('POST', '/customer/new', b);
        notify('End user created.', 'ok');
        s.page = LAST; // listed oldest first
        reload();
      },
    }), 'primary', { id: 'create-customer' });
    async function draw() {
      const all = await api('GET', '/customer/list');
      const { rows, page, pages } = slice(all, s.page);
      s.page = page;
      const cols = [
        { label: 'End user', cell: (c) => el('div', {}, el('strong', {}, c.alias || c.user_id), c.alias ? el('div', {}, mono(c.user_id)) : null) },
        { label: 'Spend / budget', cell: (c) => spendCell(c.spend, c.max_budget) },
        { label: 'Period', cell: (c) => c.budget_duration || dash },
        { label: 'Resets', cell: (c) => when(c.budget_reset_at) },
        { label: 'Status', cell: (c) => c.blocked ? badge('Blocked', 'bad') : badge('Active', 'good') },
        { label: 'Created', cell: (c) => when(c.created_at) },
        { label: 'Actions', cls: 'row-actions', cell: (c) => [
          rowButton('Edit', 'end user ' + c.user_id, 'edit:' + c.user_id, () => dialog({
            title: 'Edit end user ' + c.user_id, fields: customerFields(c),
            submit: async (v) => {
              const b = changed(v, c);
              if (!Object.keys(b).length) return;
              await api('POST', '/customer/update', Object.assign({ user_id: c.user_id }, b));
              notify('End user updated.', 'ok');
              reload();
            },
          })),
          rowButton('Delete', 'end user ' + c.user_id, 'delete:' + c.user_id, () => confirmDelete('end user ' + c.user_id, 'Its budget and spend are forgotten.', async () => {
            await api('POST', '/customer/delete', { user_ids: [c.user_id] });
            notify('End user deleted.', 'ok');
            reload();
          }), 'danger')] },
      ];
      return [table(cols, rows, ['No end users yet — create one.', ' ', button('Create end user', () => create.click(), 'primary small')],
        (c) => ({ 'data-customer': c.user_id })),
      pager(s.page, pages, all.length, 'end user', (p) => { s.page = p; reload(); })];
    }
    put(main, pageHeader('End users', 'Budgets for the end users your application names in requests.', button('Refresh', reload, 'ghost'), create), body);
    reload();
  }

  // ---- models ------------------------------------------------------------------------------------------------

  const HEALTH = { 0: ['Healthy', 'good'], 1: ['Partial outage', 'warn'], 2: ['Down', 'bad'] };

  function perMillion(v) { return v === null || v === undefined ? dash : money(v * 1e6); }

  function modelFields(m) {
    const p = m.litellm_params || {};
    return [
      { name: 'model_name', label: 'Model name (what clients ask for)', value: m.model_name, required: true },
      { name: 'model', label: 'Upstream model', value: p.model, placeholder: 'openai/gpt-4o-mini', required: true, hint: 'provider/model' },
      { name: 'api_base', label: 'API base', value: p.api_base, placeholder: 'https://…',
        hint: m.model_name ? 'Credentials in the URL are not shown: enter them again if you change it' : null },
      { name: 'api_key', label: 'API key', type: 'password', hint: m.model_name ? 'Empty keeps the current key' : 'or os.environ/NAME' },
      { name: 'input_cost_per_token', label: 'Input cost per token (USD)', type: 'money', value: p.input_cost_per_token },
      { name: 'output_cost_per_token', label: 'Output cost per token (USD)', type: 'money', value: p.output_cost_per_token },
      { name: 'rpm', label: 'Requests per minute', type: 'number', value: p.rpm },
      { name: 'tpm', label: 'Tokens per minute', type: 'number', value: p.tpm },
    ];
  }

  function modelDialog(m, after) {
    const editing = !!m.model_info;
    dialog({
      title: editing ? 'Edit ' + m.model_name : 'Add model', fields: modelFields(m), submitLabel: editing ? 'Save' : 'Add model',
      intro: 'Needs `general_settings.store_model_in_db: true`; deployments of the config file are changed in the file.',
      submit: async (v) => {
        const { model_name: name, ...params } = v;
        if (editing) {
          const before = Object.assign({}, m.litellm_params, { api_key: null });
          const lp = changed(params, before);
          if (params.api_key === null) delete lp.api_key;
          const body = { model_info: { id: m.model_info.id } };
          if (name !== m.model_name) body.model_name = name;
          if (Object.keys(lp).length) body.litellm_params = lp;
          await api('POST', '/model/update', body);
          notify('Model updated.', 'ok');
        } else {
          const lp = {};
          for (const [k, x] of Object.entries(params)) if (x !== null) lp[k] = x;
          const made = await api('POST', '/model/new', { model_name: name, litellm_params: lp });
          notify('Model added.', 'ok');
          return after(made && made.model_info && made.model_info.id);
        }
        after();
      },
    });
  }

  function renderModels(main) {
    const s = view.models;
    const body = el('div');
    const reload = () => load(body, draw);
    async function draw() {
      const [health, info] = await Promise.all([api('GET', '/health/deployments'), api('GET', '/model/info')]);
      const byId = new Map(info.data.map((m) => [m.model_info.id, m]));
      const all = health.deployments.map((d) => ({ d, m: byId.get(d.model_id) || { model_name: d.model_name, litellm_params: {}, model_info: { id: d.model_id } } }));
      const added = s.show ? all.findIndex(({ d }) => d.model_id === s.show) : -1;
      if (added >= 0) s.page = Math.floor(added / PAGE_SIZE) + 1; // the page of the deployment just added
      s.show = null;
      const { rows, page, pages } = slice(all, s.page);
      s.page = page;
      const cols = [
        { label: 'Model', cell: ({ d, m }) => el('div', {}, el('strong', {}, d.model_name), ' ',
          m.model_info.db_model ? badge('API', 'info') : badge('config', 'neutral'), el('div', {}, mono(d.model_id.slice(0, 12), d.model_id))) },
        { label: 'Upstream', cell: ({ d }) => el('div', {}, mono(d.model), d.api_base ? el('div', { class: 'muted small' }, d.api_base) : null) },
        { label: 'Health', cell: ({ d }) => {
          const [text, kind] = HEALTH[d.state] || [d.state_name, 'warn'];
          return el('div', {}, badge(text, kind),
            d.cooling_down ? el('div', { class: 'muted small' }, 'cooling down until ' + when(d.cooldown_until).slice(11) + ' UTC (' + Math.ceil(d.cooldown_remaining_seconds) + ' s)') : null,
            d.on_probation ? el('div', { class: 'muted small' }, 'on probation') : null,
            d.last_error ? el('div', { class: 'muted small' }, 'last error ' + d.last_error.status + ' ' + d.last_error.class) : null);
        } },
        { label: 'In flight', cls: 'num', cell: ({ d }) => num(d.in_flight) },
        { label: 'Used rpm / tpm', cls: 'num', cell: ({ d }) => num(d.rpm_used) + ' / ' + num(d.tpm_used) },
        { label: 'Upstream left req / tok', cls: 'num', cell: ({ d }) => num(d.remaining_requests) + ' / ' + num(d.remaining_tokens) },
        { label: 'OK / failed', cls: 'num', cell: ({ d }) => el('div', {}, num(d.successes) + ' / ' + num(d.failures),
          d.latency_ewma_seconds == null ? null : el('div', { class: 'muted small' }, (d.latency_ewma_seconds * 1000).toFixed(1) + ' ms')) },
        { label: 'Price in / out (1M tok)', cls: 'num', cell: ({ m }) => perMillion(m.litellm_params.input_cost_per_token) + ' / ' + perMillion(m.litellm_params.output_cost_per_token) },
        { label: 'Actions', cls: 'row-actions', cell: ({ d, m }) => {
          // The API changes only its own deployments; the config file's are changed in the file.
          if (!m.model_info.db_model) return el('span', { class: 'note muted small', title: 'Change it in the config file, then reload the config' }, 'Defined in the config file');
          const what = 'model ' + d.model_name + ' (' + d.model + ')';
          return [
            rowButton('Edit', what, 'edit:' + d.model_id, () => modelDialog(m, reload)),
            rowButton('Delete', what, 'delete:' + d.model_id, () => confirmDelete('model ' + d.model_name, 'Deployment ' + d.model_id + ' stops taking requests.', async () => {
              await api('POST', '/model/delete', { id: d.model_id });
              notify('Model deleted.', 'ok');
              reload();
            }), 'danger')];
        } },
      ];
      return [el('p', { class: 'muted' }, 'Routing: ' + health.routing_strategy),
        table(cols, rows, 'No models yet — add one (or list them in the config file).', ({ d }) => ({ 'data-model': d.model_id })),
        pager(page, pages, all.length, 'deployment', (p) => { s.page = p; reload(); })];
    }
    put(main, pageHeader('Models', 'Deployments with their live health and upstream limits.', button('Refresh', reload, 'ghost'),
      button('Add model', () => modelDialog({}, (id) => { s.show = id; reload(); }), 'primary', { id: 'add-model' })), body);
    reload();
  }

  // ---- spend -------------------------------------------------------------------------------------------------

  const MAX_CHART_DAYS = 31;
  const SERIES = 6; // biggest groups drawn, the rest as "other"

  /** Spend per day and group over the range: one /global/spend/report call (`per_day=true`). */
  async function spendPerDay(f) {
    const end = f.end_date ? Date.parse(f.end_date) : Date.parse(day(Date.now()));
    let start = f.start_date ? Date.parse(f.start_date) : end - 6 * DAY_MS;
    let clipped = false;
    if ((end - start) / DAY_MS + 1 > MAX_CHART_DAYS) { start = end - (MAX_CHART_DAYS - 1) * DAY_MS; clipped = true; }
    const days = [];
    for (let t = start; t <= end; t += DAY_MS) days.push(day(t));
    const report = await api('GET', '/global/spend/report' + qs({ group_by: f.group_by, per_day: 'true',
      api_key: f.api_key, team_id: f.team_id, model: f.model, start_date: days[0], end_date: days[days.length - 1] }));
    const reports = days.map((d) => report.data.filter((x) => x.day === d));
    return { days, clipped, reports };
  }

  /** A stacked bar chart (inline SVG) of `reports` per day, and the same values as a table. */
  function chart({ days, reports }, label) {
    const totals = new Map();
    reports.forEach((rows) => rows.forEach((r) => totals.set(r.group, (totals.get(r.group) || 0) + r.spend)));
    if (![...totals.values()].some((v) => v > 0)) return el('div', { class: 'empty' }, 'No spend in this period.');
    const top = [...totals.entries()].sort((a, b) => b[1] - a[1]).map((e) => e[0]);
    const shown = top.slice(0, SERIES);
    const series = top.length > SERIES ? shown.concat(['other']) : shown;
    const seriesOf = (g) => (shown.includes(g) ? g : 'other');
    const perDay = reports.map((rows) => {
      const m = new Map();
      rows.forEach((r) => m.set(seriesOf(r.group), (m.get(seriesOf(r.group)) || 0) + r.spend));
      return m;
    });
    const peak = Math.max(...perDay.map((m) => [...m.values()].reduce((a, b) => a + b, 0)));
    const mag = Math.pow(10, Math.floor(Math.log10(peak / 4)));
    const max = 4 * mag * [1, 2, 2.5, 5, 10].find((f) => f * mag >= peak / 4);
    const W = 760, H = 280, L = 70, R = 10, T = 12, B = 34;
    const plotW = W - L - R, plotH = H - T - B;
    const slot = plotW / days.length, barW = Math.max(4, Math.min(48, slot * 0.7));
    const svg = el('svg:svg', { viewBox: '0 0 ' + W + ' ' + H, class: 'chart', role: 'img', 'aria-labelledby': 'chart-title' },
      el('svg:title', { id: 'chart-title' }, 'Spend per day by ' + label));
    for (let i = 0; i <= 4; i++) {
      const y = T + plotH - (plotH * i) / 4;
      svg.append(el('svg:line', { x1: L, x2: W - R, y1: y, y2: y, class: 'grid' }),
        el('svg:text', { x: L - 6, y: y + 4, class: 'axis', 'text-anchor': 'end' }, money((max * i) / 4)));
    }
    const every = Math.ceil(days.length / 12);
    days.forEach((d, i) => {
      const x = L + slot * i + (slot - barW) / 2;
      let y = T + plotH;
      series.forEach((g, si) => {
        const v = perDay[i].get(g) || 0;
        if (v <= 0) return;
        const h = Math.max(1, (v / max) * plotH);
        y -= h;
        svg.append(el('svg:rect', { x: x.toFixed(1), y: y.toFixed(1), width: barW.toFixed(1), height: h.toFixed(1), class: 'c' + si },
          el('svg:title', {}, d + ' · ' + g + ': ' + money(v))));
      });
      if (i % every === 0) svg.append(el('svg:text', { x: (x + barW / 2).toFixed(1), y: H - 12, class: 'axis', 'text-anchor': 'middle' }, d.slice(5)));
    });
    const legend = el('ul', { class: 'legend' }, series.map((g, si) =>
      el('li', {}, el('span', { class: 'swatch c' + si, 'aria-hidden': 'true' }), g, ' ', el('span', { class: 'muted' }, money(g === 'other'
        ? [...totals.entries()].filter(([k]) => !shown.includes(k)).reduce((a, [, v]) => a + v, 0) : totals.get(g))))));
    const values = el('details', { class: 'chart-table' }, el('summary', {}, 'Table'),
      table([{ label: 'Day (UTC)', cell: (i) => days[i] }].concat(series.map((g) => ({ label: g, cls: 'num', cell: (i) => money(perDay[i].get(g) || 0) }))),
        days.map((_, i) => i), '', (i) => ({ 'data-day': days[i] })));
    return el('div', { class: 'chart-box' }, svg, legend, values);
  }

  function renderSpend(main) {
    const s = view.spend;
    if (!s.filters) s.filters = { api_key: '', team_id: '', model: '', start_date: day(Date.now() - 6 * DAY_MS), end_date: day(Date.now()), group_by: 'team' };
    const chartBox = el('div', { id: 'spend-chart' });
    const logsBox = el('div', { id: 'spend-logs' });
    const formBox = el('div');
    let names = { teams: new Map(), keys: new Map() };
    const reloadLogs = () => load(logsBox, drawLogs);
    const reloadAll = () => { load(chartBox, drawChart); reloadLogs(); };

    async function drawForm() {
      const [teams, keys, info] = await Promise.all([teamsById(), api('GET', '/key/list?return_full_object=true&size=1000'), api('GET', '/model/info')]);
      names = { teams: teams.byId, keys: new Map(keys.keys.map((k) => [k.token, k.key_alias || k.key_name])) };
      const modelNames = [...new Set(info.data.map((m) => m.model_name))].sort();
      const f = s.filters;
      const unlisted = keys.total_count - keys.keys.length;
      const keyOptions = [['', 'All keys']].concat(keys.keys.map((k) => [k.token, (k.key_alias ? k.key_alias + ' · ' : '') + k.key_name]),
        unlisted > 0 ? [['', '(' + num(unlisted) + ' newer keys not listed: only the oldest ' + num(keys.keys.length) + ' are)', true]] : []);
      const fields = [
        { name: 'api_key', label: 'Key', type: 'select', value: f.api_key, options: keyOptions },
        { name: 'team_id', label: 'Team', type: 'select', value: f.team_id, options: teamOptions(teams.list, 'All teams') },
        { name: 'model', label: 'Model', type: 'select', value: f.model, options: [['', 'All models']].concat(modelNames.map((m) => [m, m])) },
        { name: 'start_date', label: 'From (UTC)', type: 'date', value: f.start_date },
        { name: 'end_date', label: 'To (UTC)', type: 'date', value: f.end_date },
        { name: 'group_by', label: 'Chart by', type: 'select', value: f.group_by, options: [['team', 'team'], ['model', 'model'], ['key', 'key'], ['user', 'user'], ['customer', 'end user']] },
      ];
      const form = el('form', { class: 'filters', id: 'spend-filters', novalidate: true }, fields.map(field),
        el('div', { class: 'field' }, el('button', { type: 'submit', class: 'btn primary' }, 'Apply')));
      const error = el('p', { class: 'form-error', role: 'alert', id: 'spend-error', hidden: true });
      form.addEventListener('submit', (ev) => {
        ev.preventDefault();
        error.hidden = true;
        markInvalid(form, null);
        try {
          const v = readFields(form, fields);
          if (v.start_date && v.end_date && v.start_date > v.end_date) throw new ApiError('From must not be after To.', 0, 'start_date');
          for (const k of Object.keys(v)) v[k] = v[k] === null ? '' : v[k];
          s.filters = v;
          s.page = 1;
          reloadAll();
        } catch (e) {
          error.textContent = e.message;
          error.hidden = false;
          markInvalid(form, e.param);
        }
      });
      return [form, error];
    }

    async function drawChart() {
      const f = s.filters;
      const data = await spendPerDay(f);
      const label = { team: 'team', model: 'model', key: 'key', user: 'user', customer: 'end user' }[f.group_by];
      const rename = (g) => (f.group_by === 'team' ? (g ? teamName(names.teams, g) : 'no team') : f.group_by === 'key' ? names.keys.get(g) || g.slice(0, 10) : g || '(none)');
      data.reports = data.reports.map((rows) => rows.map((r) => Object.assign({}, r, { group: rename(r.group) })));
      return [el('h2', {}, 'Spend per day by ' + label),
        data.clipped ? el('p', { class: 'muted' }, 'Showing the last ' + MAX_CHART_DAYS + ' days of the range.') : null,
        chart(data, label)];
    }

    async function drawLogs() {
      const f = s.filters;
      const q = { api_key: f.api_key, team_id: f.team_id, model: f.model, start_date: f.start_date, end_date: f.end_date };
      const page = s.page;
      const data = await api('GET', '/spend/logs' + qs(Object.assign(q, { page, size: PAGE_SIZE })));
      if (data.total_pages && page > data.total_pages) { s.page = data.total_pages; return drawLogs(); }
      const rows = data.data, pages = data.total_pages, total = data.total;
      const cols = [
        { label: 'Time (UTC)', cell: (r) => when(r.start_time_ms) },
        { label: 'Key', cell: (r) => r.key_alias || mono(r.api_key.slice(0, 10), r.api_key) },
        { label: 'Team', cell: (r) => teamName(names.teams, r.team_id) },
        { label: 'User', cell: (r) => r.user || dash },
        { label: 'End user', cell: (r) => r.end_user || dash },
        { label: 'Model', cell: (r) => r.model_group },
        { label: 'Tokens in / out', cls: 'num', cell: (r) => num(r.prompt_tokens) + ' / ' + num(r.completion_tokens) },
        { label: 'Spend', cls: 'num', cell: (r) => money(r.spend) },
        { label: 'Status', cell: (r) => badge(r.status, r.status === 'success' ? 'good' : 'bad') },
        { label: 'Duration', cls: 'num', cell: (r) => num(r.end_time_ms - r.start_time_ms) + ' ms' },
      ];
      return [el('h2', {}, 'Spend logs'),
        table(cols, rows, 'No requests match these filters yet.'),
        pager(page, pages, total, 'request', (p) => { s.page = p; reloadLogs(); })];
    }

    put(main, pageHeader('Spend', 'What each key, team and model spent, from the spend log.', button('Refresh', reloadAll, 'ghost')),
      formBox, el('section', { class: 'panel' }, chartBox), el('section', {}, logsBox));
    load(formBox, drawForm).then(reloadAll);
  }

  // ---- routing -----------------------------------------------------------------------------------------------

  const PAGES = { keys: renderKeys, teams: renderTeams, users: renderUsers, customers: renderCustomers, models: renderModels, spend: renderSpend };

  /** The page's first focus: a control marked data-autofocus (a new key's Copy button), else its h1. */
  function focusPage() {
    const target = $('#app [data-autofocus]') || $('#app h1');
    if (target) target.focus({ preventScroll: true });
  }

  function route() {
    if (!masterKey) return renderSignIn();
    const m = location.hash.match(/^#\/(\w+)(?:\/(.+))?$/);
    const name = m && PAGES[m[1]] ? m[1] : 'keys';
    let arg = m && m[2] ? m[2] : null;
    try { arg = arg && decodeURIComponent(arg); } catch (_) { /* a malformed escape: the raw text is the id */ }
    document.querySelectorAll('#nav a').forEach((a) => {
      if (a.dataset.page === name) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    });
    document.querySelectorAll('dialog').forEach((d) => d.close());
    const main = $('#app');
    main.replaceChildren();
    main.dataset.page = name;
    PAGES[name](main, arg);
    focusPage();
    const h1 = $('h1', main);
    document.title = (h1 ? h1.textContent + ' · ' : '') + 'llm admin';
  }

  window.addEventListener('hashchange', () => {
    if (location.hash && !location.hash.startsWith('#/')) return; // an anchor in the page (#app), not a page
    document.querySelectorAll('#notice .error').forEach((n) => n.remove());
    route();
  });
  // A page restored from the back/forward cache would come back signed in: sign out when it is left.
  window.addEventListener('pagehide', () => { if (masterKey) signOut(); });
  document.addEventListener('DOMContentLoaded', () => {
    $('#signout').addEventListener('click', () => signOut());
    $('.skip').addEventListener('click', (ev) => {
      ev.preventDefault(); // no hash change: the page and a half-typed master key stay
      $('#app').focus();
    });
    route();
  });
})();
