// The usage page: a workspace's usage, month so far, invoices and keys, read from this
// API with one of the workspace's keys. The key lives in sessionStorage only and travels
// in the Authorization header only: never in a URL, never logged.
import {
  addDecimals, compact, formatInt, isoDate, isoTime, lineColumns, monthName, planText, rangeFor, ratio, toBigInt, utcDate,
  utcHour,
} from './format.js';

const KEY = 'venna.apiKey';
const $ = (id) => document.getElementById(id);
const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#4b5563'];

// APIError is an error answer of the API: its envelope's message is what the user sees.
class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, { key = sessionStorage.getItem(KEY), raw = false } = {}) {
  const resp = await fetch(path, {
    headers: { Authorization: `Bearer ${key}` },
    cache: 'no-store',
    credentials: 'omit',
  });
  if (!resp.ok) {
    let code = '', message = `The API answered ${resp.status}.`;
    try {
      const body = await resp.json();
      ({ code, message } = body.error);
    } catch { /* not the envelope: keep the status */ }
    throw new APIError(resp.status, code, message);
  }
  return raw ? resp : resp.json();
}

// el builds an element: el('td', {className: 'num'}, 'text', child, ...).
function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k.startsWith('aria-') || k === 'scope' || k === 'colspan') e.setAttribute(k, v);
    else e[k] = v;
  }
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
}

const state = {
  keys: new Map(), // key ID → key
  ownKeyID: '',
  charts: [],
  loadSeq: 0,
  invoice: null, // the invoice shown
};

function status(msg) {
  $('status').textContent = msg;
}

// fail shows an error; a key that stopped working signs out.
function fail(err) {
  if (err instanceof APIError && err.status === 401) {
    signOut(err.message);
    return;
  }
  status(err.message);
}

// ---- sign in and out ----

async function signIn(key) {
  $('signin-error').textContent = '';
  if (!key) {
    $('signin-error').textContent = 'Enter an API key (vk_…).';
    return;
  }
  try {
    // The key is kept only once the API has accepted it.
    const keys = await api('v1/keys', { key });
    sessionStorage.setItem(KEY, key);
    $('key-input').value = '';
    showDashboard(key, keys);
  } catch (err) {
    $('signin-error').textContent = err.message;
    $('key-input').select(); // typing again replaces the wrong key
  }
}

function signOut(message = '') {
  sessionStorage.removeItem(KEY);
  state.loadSeq++;
  state.keys.clear();
  state.ownKeyID = '';
  state.invoice = null;
  destroyCharts();
  for (const id of ['groups', 'grants', 'invoices', 'keys', 'invoice-lines']) $(id).tBodies[0].replaceChildren();
  for (const id of ['budgets', 'rate-limits', 'alerts']) $(id).replaceChildren();
  for (const id of ['total-requests', 'total-input', 'total-cached', 'total-output', 'total-cost', 'spend-usd',
    'credit-balance', 'billing-mode']) $(id).textContent = '–';
  for (const id of ['workspace-id', 'range-label', 'period', 'status', 'range-error']) $(id).textContent = '';
  $('totals').dataset.state = 'idle';
  $('invoice-detail').hidden = true;
  $('dashboard').hidden = true;
  $('workspace').hidden = true;
  $('sign-out').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message;
  $('key-input').focus();
}

function showDashboard(key, keys) {
  // The signed-in key's ID is the first part of the token, vk_<id>_<secret>.
  const m = /^vk_([^_]+)_/.exec(key);
  state.ownKeyID = m ? `key_${m[1]}` : '';
  $('signin').hidden = true;
  $('dashboard').hidden = false;
  $('workspace').hidden = false;
  $('sign-out').hidden = false;
  renderKeys(keys.data);
  loadUsage();
  loadMonth();
  loadInvoices();
  $('main').focus();
}

// ---- usage ----

function currentRange() {
  const choice = $('range').value;
  for (const f of document.querySelectorAll('.custom')) f.hidden = choice !== 'custom';
  return rangeFor(choice, new Date(), { from: $('from').value, to: $('to').value, width: $('width').value });
}

// usagePages reads every page of GET /v1/usage for the range.
async function usagePages(r, group) {
  const buckets = [];
  let page = null;
  for (let n = 0; n < 1000; n++) {
    const q = new URLSearchParams({
      bucket_width: r.width, start_time: r.start, end_time: r.end, group_by: group,
      limit: r.width === '1h' ? 168 : 31,
    });
    if (page) q.set('page', page);
    const body = await api(`v1/usage?${q}`);
    buckets.push(...body.data);
    if (!body.has_more) return buckets;
    page = body.next_page;
  }
  throw new Error('The usage answer did not end after 1000 pages.');
}

function emptySums() {
  return { requests: 0n, input: 0n, cached: 0n, output: 0n, cost: '0', priced: true };
}

function addResult(s, r) {
  s.requests += toBigInt(r.num_model_requests);
  s.input += toBigInt(r.input_tokens);
  s.cached += toBigInt(r.input_cached_tokens);
  s.output += toBigInt(r.output_tokens);
  if (r.cost === null || r.cost === undefined) s.priced = false;
  else s.cost = addDecimals(s.cost, r.cost);
}

function costText(s) {
  return s.priced ? s.cost : 'unknown';
}

// summarize turns the buckets into totals, per-group totals and per-bucket series.
function summarize(buckets, group) {
  const total = emptySums();
  const groups = new Map(); // label → {sums, tokens[], cost[] (floats), costText[]}
  const times = buckets.map((b) => b.start_time);
  buckets.forEach((b, i) => {
    for (const r of b.results) {
      const label = (group === 'model' ? r.model : r.api_key_id) ?? '';
      let g = groups.get(label);
      if (!g) {
        g = { sums: emptySums(), tokens: times.map(() => 0), cost: times.map(() => 0), costText: times.map(() => '0') };
        groups.set(label, g);
      }
      addResult(total, r);
      addResult(g.sums, r);
      g.tokens[i] += r.input_tokens + r.output_tokens;
      g.costText[i] = r.cost ?? 'unknown';
      g.cost[i] = r.cost === null ? null : Number(r.cost);
    }
  });
  return { total, groups: [...groups.entries()].sort((a, b) => a[0].localeCompare(b[0])), times };
}

function keyLabel(id) {
  const k = state.keys.get(id);
  return k ? `${k.name || '(unnamed)'} · ${id}` : id;
}

function groupLabel(group, label) {
  return group === 'model' ? label || '(none)' : keyLabel(label);
}

async function loadUsage() {
  let r;
  try {
    r = currentRange();
    $('range-error').textContent = '';
  } catch (err) {
    $('range-error').textContent = err.message;
    return;
  }
  const group = $('group').value;
  const seq = ++state.loadSeq;
  const totals = $('totals');
  Object.assign(totals.dataset, { state: 'loading', start: r.start, end: r.end, width: r.width, group });
  const fmt = r.width === '1h' ? utcHour : utcDate;
  const last = r.width === '1h' ? r.end - 3600 : r.end - 86400;
  $('range-label').textContent = r.width === '1h'
    ? `${utcHour(r.start)} to ${utcHour(r.end)} UTC, ${(r.end - r.start) / 3600} hourly buckets`
    : `${fmt(r.start)} to ${fmt(last)} (UTC days), ${(r.end - r.start) / 86400} daily buckets`;
  status('Loading usage…');
  try {
    const buckets = await usagePages(r, group);
    if (seq !== state.loadSeq) return; // a newer choice is loading
    renderUsage(summarize(buckets, group), group, r);
    totals.dataset.state = 'ready';
    status('');
  } catch (err) {
    if (seq !== state.loadSeq) return;
    totals.dataset.state = 'error';
    fail(err);
  }
}

function renderUsage({ total, groups, times }, group, r) {
  $('total-requests').textContent = formatInt(total.requests);
  $('total-input').textContent = formatInt(total.input);
  $('total-cached').textContent = formatInt(total.cached);
  $('total-output').textContent = formatInt(total.output);
  $('total-cost').textContent = costText(total);
  $('total-cost').title = total.priced ? `${total.cost} USD, exact` : 'Some usage has no price.';

  const byKey = group === 'api_key_id';
  $('group-head').textContent = byKey ? 'API key' : 'Model';
  $('groups-caption').textContent = `By ${byKey ? 'API key' : 'model'} over the range`;
  $('groups').tBodies[0].replaceChildren(...groups.map(([label, g]) => el('tr', { dataset: { group: label } },
    el('th', { scope: 'row' }, groupLabel(group, label)),
    el('td', { className: 'num requests' }, formatInt(g.sums.requests)),
    el('td', { className: 'num input' }, formatInt(g.sums.input)),
    el('td', { className: 'num cached' }, formatInt(g.sums.cached)),
    el('td', { className: 'num output' }, formatInt(g.sums.output)),
    el('td', { className: 'num money cost' }, costText(g.sums)),
  )));

  destroyCharts();
  $('no-usage').hidden = groups.length > 0;
  if (groups.length === 0 || !globalThis.uPlot) return;
  const hourly = r.width === '1h';
  drawChart($('chart-tokens'), times, hourly, groups.map(([label, g]) => ({
    label: groupLabel(group, label), values: g.tokens, text: g.tokens.map((v) => formatInt(v)),
  })), compact);
  drawChart($('chart-cost'), times, hourly, groups.map(([label, g]) => ({
    label: groupLabel(group, label), values: g.cost, text: g.costText,
  })), (v) => (Math.abs(v) >= 1000 ? compact(v) : String(+v.toPrecision(3))));
}

// ---- charts (uPlot) ----

function destroyCharts() {
  for (const c of state.charts) c.destroy();
  state.charts = [];
}

function drawChart(host, times, hourly, series, tick) {
  const { uPlot } = globalThis;
  const opts = {
    width: Math.max(240, host.clientWidth),
    height: 240,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
    // The y axis starts at zero: a chart that cuts its axis exaggerates changes.
    scales: { x: { time: true }, y: { range: (u, lo, hi) => [Math.min(0, lo), hi > 0 ? hi * 1.05 : 1] } },
    cursor: { focus: { prox: 16 } },
    series: [
      { label: 'UTC', value: hourly ? '{YYYY}-{MM}-{DD} {HH}:{mm}' : '{YYYY}-{MM}-{DD}' },
      ...series.map((s, i) => ({
        label: s.label,
        stroke: PALETTE[i % PALETTE.length],
        width: 2,
        points: { show: true, size: 5 },
        // The legend shows the API's exact figures, not the float that was drawn.
        value: (u, v, si, idx) => (idx === null || idx === undefined ? '–' : s.text[idx]),
      })),
    ],
    // Ticks in UTC, 24-hour: the day at midnight, else the hour.
    axes: [
      { values: (u, splits, ai, space, incr) => splits.map((v) => (hourly && incr < 86400 && v % 86400 !== 0 ? utcHour(v).slice(11) : utcDate(v).slice(5))) },
      { size: 56, values: (u, vals) => vals.map(tick) },
    ],
  };
  state.charts.push(new uPlot(opts, [times, ...series.map((s) => s.values)], host));
}

function resizeCharts() {
  for (const c of state.charts) c.setSize({ width: Math.max(240, c.root.parentElement.clientWidth), height: 240 });
}

// ---- the month so far: spend, budgets, limits, alerts, credits ----

async function loadMonth() {
  const [spend, credits, sub] = await Promise.allSettled([api('v1/spend'), api('v1/credits'), api('v1/subscription')]);
  if (sub.status === 'fulfilled') $('plan').textContent = planText(sub.value);
  else if (sub.reason instanceof APIError && sub.reason.status === 404) $('plan').textContent = 'not available';
  else fail(sub.reason);
  if (spend.status === 'fulfilled') renderSpend(spend.value);
  else if (spend.reason instanceof APIError && spend.reason.status === 404) $('spend-usd').textContent = 'not available';
  else fail(spend.reason);
  if (credits.status === 'fulfilled') renderCredits(credits.value);
  else if (credits.reason instanceof APIError && credits.reason.status === 404) $('credit-balance').textContent = 'not available';
  else fail(credits.reason);
}

function owner(b) {
  return b.api_key_id ? `Key ${keyLabel(b.api_key_id)}` : 'Workspace';
}

function renderSpend(s) {
  $('workspace-id').textContent = s.workspace_id;
  $('spend-usd').textContent = s.spend_usd;
  $('period').textContent = `${monthName(s.period_start)} (UTC), from ${isoDate(s.period_start)} to ${isoDate(s.period_end)} (end excluded).`;
  $('budgets').replaceChildren(...(s.budgets.length ? s.budgets.map((b) => el('li', {
    className: b.exceeded ? 'exceeded' : '', dataset: { key: b.api_key_id ?? '' },
  },
  el('span', {}, `${owner(b)}: `),
  el('span', { className: 'money spend' }, b.spend_usd), ' of ',
  el('span', { className: 'money budget' }, b.monthly_usd), ' USD spent, ',
  el('span', { className: 'money remaining' }, b.remaining_usd), ' USD left',
  b.hard_limit ? ' · hard limit' : '', b.exceeded ? ' · exceeded' : '',
  el('meter', { min: 0, max: 1, low: 0.8, high: 0.999, optimum: 0, value: ratio(b.spend_usd, b.monthly_usd),
    'aria-label': `${owner(b)} budget used` }),
  )) : [el('li', { className: 'muted' }, 'No budget.')]));
  const perMin = (n, what) => (n ? `${formatInt(n)} ${what}/min` : `no ${what} limit`);
  $('rate-limits').replaceChildren(...(s.rate_limits.length ? s.rate_limits.map((l) => el('li', {},
    `${owner(l)}: ${perMin(l.rpm, 'requests')}, ${perMin(l.tpm, 'tokens')}`)) : [el('li', { className: 'muted' }, 'No rate limit.')]));
  $('alerts').replaceChildren(...(s.alerts.length ? s.alerts.map((a) => el('li', {},
    `${isoTime(a.created_at)}: ${owner(a)} reached ${a.threshold_percent} % of ${a.budget_usd} USD (${a.spend_usd} USD spent)`,
  )) : [el('li', { className: 'muted' }, 'No alert.')]));
}

function renderCredits(c) {
  $('workspace-id').textContent = c.workspace_id;
  $('credit-balance').textContent = c.balance_usd;
  $('billing-mode').textContent = c.prepaid ? 'Prepaid (stops when credit runs out)' : 'Invoiced monthly';
  $('grants').tBodies[0].replaceChildren(...(c.grants.length ? c.grants.map((g) => el('tr', { dataset: { grant: g.id } },
    el('th', { scope: 'row' }, (g.reason || g.id) + (g.voided ? ' (void)' : '')),
    el('td', { className: 'num money' }, g.amount_usd),
    el('td', { className: 'num money' }, g.used_usd),
    el('td', { className: 'num money' }, g.remaining_usd),
    el('td', {}, isoDate(g.effective_from)),
    el('td', {}, g.expires_at ? isoDate(g.expires_at) : 'never'),
  )) : [el('tr', {}, el('td', { colspan: 6, className: 'muted' }, 'No credit grant.'))]));
}

// ---- invoices ----

async function loadInvoices() {
  try {
    const list = await api('v1/invoices');
    const rows = [...list.data].sort((a, b) => b.period_start.localeCompare(a.period_start));
    $('invoices').tBodies[0].replaceChildren(...(rows.length ? rows.map((inv) => el('tr', { dataset: { invoiceId: inv.id } },
      el('th', { scope: 'row' }, monthName(inv.period_start)),
      el('td', {}, inv.status),
      el('td', { className: 'num money', title: `subtotal ${inv.subtotal} ${inv.currency}, exact` }, `${inv.total} ${inv.currency}`),
      el('td', {}, el('button', {
        type: 'button', className: 'link', textContent: inv.id, dataset: { action: 'view', invoiceId: inv.id },
        'aria-label': `Show invoice ${inv.id} of ${monthName(inv.period_start)}`,
      })),
    )) : [el('tr', {}, el('td', { colspan: 4, className: 'muted' }, 'No invoice yet.'))]));
  } catch (err) {
    fail(err);
  }
}

async function showInvoice(id) {
  try {
    const inv = await api(`v1/invoices/${encodeURIComponent(id)}`);
    state.invoice = inv;
    $('invoice-title').textContent = `Invoice ${inv.id}`;
    $('invoice-meta').textContent = `${monthName(inv.period_start)} · ${inv.status} · computed ${isoTime(inv.computed_at)}`
      + (inv.finalized_at ? ` · finalized ${isoTime(inv.finalized_at)}` : '');
    $('invoice-lines').tBodies[0].replaceChildren(...(inv.lines?.length ? inv.lines.map((l) => {
      const [quantity, price] = lineColumns(l);
      return el('tr', { dataset: { line: l.line_no }, className: l.kind },
        el('td', {}, String(l.line_no)),
        el('td', {}, l.kind),
        el('td', {}, l.description),
        el('td', { className: 'num' }, quantity),
        el('td', { className: 'num money' }, price),
        el('td', { className: 'num money amount' }, l.amount),
      );
    }) : [el('tr', {}, el('td', { colspan: 6, className: 'muted' }, 'No usage.'))]));
    $('invoice-subtotal').textContent = `${inv.subtotal} ${inv.currency}`;
    $('invoice-total').textContent = `${inv.total} ${inv.currency}`;
    $('invoice-detail').hidden = false;
    $('invoice-detail').dataset.invoiceId = inv.id;
    $('invoice-title').focus();
  } catch (err) {
    fail(err);
  }
}

// download fetches an export with the key in its header and saves it through a Blob URL:
// a plain link could not carry the header, and the key never goes into a URL.
async function download(ext) {
  const inv = state.invoice;
  if (!inv) return;
  try {
    const resp = await api(`v1/invoices/${encodeURIComponent(inv.id)}.${ext}`, { raw: true });
    const url = URL.createObjectURL(await resp.blob());
    const a = el('a', { href: url, download: `${inv.id}.${ext}` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    status(`Saved ${inv.id}.${ext}.`);
  } catch (err) {
    fail(err);
  }
}

// ---- keys ----

function renderKeys(keys) {
  state.keys = new Map(keys.map((k) => [k.id, k]));
  if (keys[0]) $('workspace-id').textContent = keys[0].workspace_id;
  $('keys').tBodies[0].replaceChildren(...keys.map((k) => el('tr', { dataset: { key: k.id }, className: k.revoked_at ? 'revoked' : '' },
    el('th', { scope: 'row' }, k.name || '(unnamed)', k.id === state.ownKeyID ? el('span', { className: 'badge' }, 'signed in') : null),
    el('td', {}, el('code', {}, k.id)),
    el('td', {}, isoTime(k.created_at)),
    el('td', { className: 'key-status' }, k.revoked_at ? `revoked ${isoTime(k.revoked_at)}` : 'active'),
  )));
}

// ---- wiring ----

$('signin-form').addEventListener('submit', (e) => {
  e.preventDefault();
  signIn($('key-input').value.trim());
});
$('sign-out').addEventListener('click', () => signOut());
$('controls').addEventListener('submit', (e) => {
  e.preventDefault();
  loadUsage();
  loadMonth();
});
for (const id of ['range', 'group', 'width', 'from', 'to']) {
  $(id).addEventListener('change', () => {
    if (id === 'range' && $('range').value === 'custom' && !$('from').value) {
      // Start a custom range from the last 7 days, to be edited.
      const r = rangeFor('7d', new Date());
      $('from').value = utcDate(r.start);
      $('to').value = utcDate(r.end - 86400);
    }
    loadUsage();
  });
}
$('invoices').addEventListener('click', (e) => {
  const b = e.target.closest('button[data-action="view"]');
  if (b) showInvoice(b.dataset.invoiceId);
});
$('download-csv').addEventListener('click', () => download('csv'));
$('download-html').addEventListener('click', () => download('html'));
$('close-invoice').addEventListener('click', () => {
  const id = state.invoice?.id;
  $('invoice-detail').hidden = true;
  state.invoice = null;
  document.querySelector(`button[data-invoice-id="${CSS.escape(id ?? '')}"]`)?.focus();
});
new ResizeObserver(() => resizeCharts()).observe($('usage'));

const saved = sessionStorage.getItem(KEY);
if (saved) {
  // A reload in the same tab: check the kept key again.
  api('v1/keys', { key: saved }).then((keys) => showDashboard(saved, keys), (err) => signOut(err.message));
} else {
  signOut();
}
