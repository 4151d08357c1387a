// The consent page, nicer with JavaScript (everything works without it; the server decides).
// As the customer narrows, the summary sentence at the top is rewritten with the same wording the
// server uses (consent/src/dashboard/text.rs, AccessSummary), and the quick period choices fill
// in the two dates they stand for, cut to the period the app asked for.
'use strict';
(function () {
  const form = document.getElementById('consent');
  const out = document.getElementById('summary');
  if (!form || !out) return;
  const app = out.dataset.app || 'The app';
  const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const ORDER = [['accounts:read', 'account details'], ['balances:read', 'balances'], ['transactions:read', 'transactions']];
  const field = (name) => form.querySelector(`input[name="${name}"]`);
  const checked = (name) => Array.from(form.querySelectorAll(`input[name="${name}"]:checked`));

  // `2026-01-05` -> `5 Jan 2026` (no locale: the same text as the server writes).
  function day(iso) {
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(iso || '');
    return m ? `${Number(m[3])} ${MONTHS[Number(m[2]) - 1]} ${m[1]}` : null;
  }
  function andList(items) {
    if (items.length <= 1) return items.join('');
    return `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`;
  }
  const iso = (d) => d.toISOString().slice(0, 10);

  // The first and last day of a quick choice, as `flow::consent::preset_window` computes them.
  function preset(name) {
    const now = new Date();
    const today = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()));
    const back = (n) => {
      const d = new Date(today);
      const target = d.getUTCMonth() - n;
      d.setUTCDate(1);
      d.setUTCMonth(target);
      const last = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 0)).getUTCDate();
      d.setUTCDate(Math.min(today.getUTCDate(), last));
      return d;
    };
    const year = today.getUTCFullYear();
    if (name === 'this_year') return [`${year}-01-01`, `${year}-12-31`];
    if (name === 'last_3_months') return [iso(back(3)), iso(today)];
    if (name === 'last_12_months') return [iso(back(12)), iso(today)];
    return null;
  }

  function fillPeriod(name) {
    const span = preset(name);
    const from = field('transactions_from');
    const until = field('transactions_until');
    if (!span || !from || !until) return;
    let [first, last] = span;
    if (from.min && first < from.min) first = from.min;
    if (until.max && last > until.max) last = until.max;
    from.value = first;
    until.value = last;
  }

  function summary() {
    const actions = checked('action').map((e) => e.value);
    const what = ORDER.filter(([a]) => actions.includes(a)).map(([, text]) => text);
    const accounts = checked('account').length;
    const merchants = checked('merchant').map((e) => e.dataset.name || e.value);
    if (!what.length || !accounts || (form.dataset.merchantsRequired !== undefined && !merchants.length)) {
      return `${app} will see nothing.`;
    }
    let s = `${app} will see ${andList(what)} of ${accounts === 1 ? '1 account' : `${accounts} accounts`}`;
    if (actions.includes('transactions:read')) {
      const from = day(field('transactions_from')?.value);
      const until = day(field('transactions_until')?.value);
      s += from && until ? ` from ${from} to ${until}` : ' from any date';
      if (merchants.length > 3) s += `, only with ${merchants.length} merchants`;
      else if (merchants.length) s += `, only with ${andList(merchants)}`;
    }
    const end = day(field('expires_at')?.value);
    return end ? `${s}, until ${end}.` : `${s}.`;
  }

  form.addEventListener('change', (event) => {
    const t = event.target;
    if (t.name === 'period' && t.value !== 'dates') fillPeriod(t.value);
    if (t.name === 'transactions_from' || t.name === 'transactions_until') {
      const dates = form.querySelector('input[name="period"][value="dates"]');
      if (dates) dates.checked = true;
    }
    out.textContent = summary();
  });
  form.addEventListener('input', () => { out.textContent = summary(); });
})();
