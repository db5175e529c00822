// fedswarm dashboard. Plain JS, no build step. Reads only the documented JSON API
// (docs/api.md) and the server-sent event stream at /api/events.
//
// Everything shown comes from peers or the daemon and is untrusted: it is put on
// the page with textContent / DOM nodes only, never with innerHTML.
"use strict";

(function () {
  const state = {
    status: null, peers: [], rounds: [], training: null, security: null, traffic: null, fedmkt: null,
    fedkseed: null, offsite: null, evaluation: null,
    round: null, names: new Map(), charts: {}, events: 0,
  };
  window.fedswarmDashboard = state; // for operators' consoles and the browser test

  // ---------- small DOM helpers (text only) ----------
  function byId(id) { return document.getElementById(id); }
  function setText(id, value) {
    const node = byId(id);
    if (node) node.textContent = value === null || value === undefined || value === "" ? "–" : String(value);
  }
  function el(tag, opts, children) {
    const node = document.createElement(tag);
    if (opts) {
      if (opts.cls) node.className = opts.cls;
      if (opts.title !== undefined && opts.title !== null) node.title = String(opts.title);
      if (opts.text !== undefined) node.textContent = opts.text === null ? "–" : String(opts.text);
    }
    for (const child of children || []) node.appendChild(child);
    return node;
  }
  function td(value, cls) { return el("td", { cls: cls, text: value === undefined ? null : value }); }
  function fillBody(tableId, rows, makeRow) {
    const body = byId(tableId).tBodies[0];
    const fresh = document.createElement("tbody");
    for (const row of rows) fresh.appendChild(makeRow(row));
    body.replaceWith(fresh);
  }

  // ---------- formatting ----------
  function num(x, digits) {
    if (typeof x !== "number" || !isFinite(x)) return null;
    return x.toFixed(digits === undefined ? 3 : digits);
  }
  function bytes(n) {
    if (typeof n !== "number" || !isFinite(n)) return null;
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0; let v = n;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
    return (i === 0 ? String(v) : v.toFixed(1)) + " " + units[i];
  }
  function duration(s) {
    if (typeof s !== "number" || !isFinite(s)) return null;
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d) return d + "d " + h + "h " + m + "m";
    if (h) return h + "h " + m + "m " + (s % 60) + "s";
    if (m) return m + "m " + (s % 60) + "s";
    return (s % 60) + "s";
  }
  function toDate(ts) {
    if (typeof ts === "number" && isFinite(ts)) return new Date(ts < 1e12 ? ts * 1000 : ts);
    if (typeof ts === "string" && ts) { const d = new Date(ts); return isNaN(d.getTime()) ? null : d; }
    return null;
  }
  function ago(ts) {
    const d = toDate(ts);
    if (!d) return null;
    const s = Math.max(0, (Date.now() - d.getTime()) / 1000);
    return duration(s) + " ago";
  }
  function clock(ts) { const d = toDate(ts); return d ? d.toLocaleTimeString() : null; }
  function short(id) { return typeof id === "string" && id.length > 16 ? id.slice(0, 8) + "…" + id.slice(-6) : id; }
  function nameOf(id) { return state.names.get(id) || short(id); }
  function list(items) {
    if (!Array.isArray(items)) return null;
    return items.map(nameOf).join(", ");
  }
  function count(items) { return Array.isArray(items) ? items.length : items; }

  // ---------- fetching ----------
  async function getJSON(path) {
    const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401) { setLive(false, "not authorised — reopen the link with ?token="); throw new Error("401"); }
    if (!response.ok) throw new Error(path + " answered " + response.status);
    return response.json();
  }

  async function refreshAll() {
    const parts = await Promise.allSettled([
      getJSON("/api/status"), getJSON("/api/peers"), getJSON("/api/rounds"),
      getJSON("/api/training"), getJSON("/api/security"), getJSON("/api/traffic"),
      getJSON("/api/fedmkt"), getJSON("/api/fedkseed"), getJSON("/api/offsite"),
      getJSON("/api/evaluation"),
    ]);
    const value = (i) => (parts[i].status === "fulfilled" ? parts[i].value : null);
    if (value(1)) { state.peers = value(1); rememberNames(state.peers); renderPeers(); }
    if (value(4)) { state.security = value(4); rememberNames(state.security.roster || []); renderSecurity(); }
    if (value(0)) { state.status = value(0); renderOverview(); }
    if (value(5)) { state.traffic = value(5); renderTraffic(); }
    if (value(2)) { state.rounds = value(2); renderRounds(); }
    if (value(3)) { state.training = value(3); renderTraining(); }
    if (value(6)) { state.fedmkt = value(6); renderFedMKT(); }
    if (value(7)) { state.fedkseed = value(7); renderFedKSeed(); }
    if (value(8)) { state.offsite = value(8); renderOffsite(); }
    if (value(9)) { state.evaluation = value(9); renderEvaluation(); }
    showTab();
  }

  let refreshTimer = null;
  function refreshSoon() {
    if (refreshTimer !== null) return;
    refreshTimer = setTimeout(() => { refreshTimer = null; refreshAll().catch(() => {}); }, 250);
  }

  function rememberNames(entries) {
    for (const entry of entries) {
      if (entry && typeof entry.peer_id === "string" && typeof entry.org === "string") {
        state.names.set(entry.peer_id, entry.org);
      }
    }
  }

  // ---------- rendering ----------
  function showRound(round) {
    if (typeof round !== "number") return;
    state.round = round;
    setText("ov-round", round);
  }

  function renderOverview() {
    const s = state.status || {};
    setText("hdr-org", s.org);
    if (s.org) document.title = "fedswarm — " + s.org;
    setText("ov-org", s.org);
    setText("ov-federation", s.federation_id);
    setText("ov-peer-id", s.peer_id);
    setText("ov-addrs", Array.isArray(s.listen_addrs) ? s.listen_addrs.join("  ") : s.listen_addrs);
    showRound(s.round);
    setText("ov-rounds-progress",
      s.rounds_target ? (s.rounds_completed ?? "–") + " of " + s.rounds_target + " completed"
        : (s.rounds_completed !== undefined ? s.rounds_completed + " completed" : ""));
    setText("ov-state", s.state);
    setText("ov-mode", s.mode);
    const total = state.peers.length;
    setText("ov-peers-up", s.peers_up !== undefined ? s.peers_up : state.peers.filter((p) => p.up && !p.is_self).length);
    setText("ov-peers-total", total ? "of " + Math.max(0, total - 1) + " other roster members" : "");
    setText("ov-eval-last", num(s.eval_loss_last));
    setText("ov-eval-start", s.eval_loss_start !== undefined && s.eval_loss_start !== null ? "started at " + num(s.eval_loss_start) : "");
    setText("ov-uptime", duration(s.uptime_s));
    setText("ov-version", s.version);
    setText("ov-device", typeof s.device === "object" && s.device !== null ? JSON.stringify(s.device) : s.device);
    setText("ov-secagg", typeof s.secure_aggregation === "object" && s.secure_aggregation !== null
      ? JSON.stringify(s.secure_aggregation) : s.secure_aggregation);
    setText("ov-fingerprint", s.adapter_fingerprint);
    setText("ov-privacy", privacyText(s.privacy) + groupPrivacyText(s.group_privacy));
    renderPrivacy(s.privacy);
    setText("ov-screen", screenText(s.screen));
  }

  // Rows [data.screen] dropped at load, by screen, and where the report is (docs/safety.md).
  function screenText(sc) {
    if (!sc || !sc.enabled) return "off";
    const by = Object.entries(sc.dropped_by_screen || {}).map(([k, v]) => k + " " + v).join(", ");
    return sc.rows_dropped + " of " + sc.rows_checked + " rows dropped" + (by ? " (" + by + ")" : "")
      + "; " + sc.report_entries + " in " + sc.report_path;
  }

  // ε spent and left of the DP budget ([privacy], docs/privacy.md), or "off".
  function privacyText(p) {
    if (!p || !p.enabled) return "off";
    return "ε " + num(p.epsilon_spent, 3) + " spent of " + p.epsilon_target + ", " + num(p.epsilon_remaining, 3)
      + " left (δ " + Number(p.delta).toPrecision(3) + ")" + (p.training_stopped ? "; budget spent, training stopped" : "");
  }

  // group-level DP inside secure aggregation, appended to the overview's privacy row
  function groupPrivacyText(g) {
    if (!g || !g.enabled) return "";
    return "; group level ε " + num(g.epsilon_spent, 3) + (g.epsilon_target != null ? " of " + g.epsilon_target : "")
      + " over " + g.rounds + " rounds";
  }

  function renderPrivacy(p) {
    const rows = !p || !p.enabled ? [["enabled", "no: training is not differentially private"]] : [
      ["ε spent", num(p.epsilon_spent, 3)], ["ε target", p.epsilon_target], ["ε remaining", num(p.epsilon_remaining, 3)],
      ["δ", Number(p.delta).toPrecision(3)], ["DP-SGD steps", p.steps], ["noise multiplier", num(p.noise_multiplier, 3)],
      ["sample rate", Number(p.sample_rate).toPrecision(3)], ["clipping norm", p.max_grad_norm], ["accountant", p.accountant],
      ["training", p.training_stopped ? "stopped: budget spent" : "running"],
      ["not covered", Array.isArray(p.not_covered) ? p.not_covered.join("; ") : p.not_covered],
    ];
    fillBody("privacy-table", rows, ([key, value]) => el("tr", null, [el("th", { text: key }), td(value)]));
  }

  function renderTraffic() {
    const t = state.traffic || {};
    setText("tr-bytes-sent", bytes(t.bytes_sent));
    setText("tr-bytes-received", bytes(t.bytes_received));
    setText("tr-blobs-sent", t.blobs_sent);
    setText("tr-blobs-received", t.blobs_received);
  }

  function renderPeers() {
    fillBody("peers-table", state.peers, (p) => {
      const status = el("td", null, [el("span", { cls: "badge " + (p.up ? "up" : "down"), text: p.up ? "up" : "down" })]);
      if (p.is_self) status.appendChild(el("span", { cls: "badge self", text: "this daemon" }));
      return el("tr", null, [
        status,
        td(p.org),
        el("td", { cls: "mono", title: p.peer_id, text: short(p.peer_id) }),
        td(Array.isArray(p.addrs) ? p.addrs.join(" ") : p.addrs, "mono"),
        el("td", { title: clock(p.last_seen), text: p.is_self ? "now" : ago(p.last_seen) }),
        td(typeof p.latency_ms === "number" ? num(p.latency_ms, 1) + " ms" : null, "num"),
        td(p.round, "num"),
        td(p.state),
        el("td", { cls: "mono", title: p.fingerprint, text: short(p.fingerprint) }),
        td(p.version),
      ]);
    });
    if (state.status) renderOverview();
  }

  // Round 0 is the daemon's initial evaluation, not a round: charts start at round 1.
  function realRounds(rows) { return rows.filter((r) => r && typeof r.round === "number" && r.round >= 1); }

  // Apply split into its parts, so a slow evaluation or checkpoint shows as such;
  // whatever the parts do not cover (and rounds recorded before parts were) is "apply s".
  function applyDatasets(rounds) {
    const colours = { apply: "#1a7f37", eval: "#8250df", samples: "#bf3989", checkpoint: "#57606a", publish: "#0a7ea4" };
    const partOf = (r, k) => (r.apply_parts && typeof r.apply_parts[k] === "number" ? r.apply_parts[k] : null);
    const rest = rounds.map((r) => {
      if (typeof r.apply_s !== "number") return null;
      const known = APPLY_PARTS.reduce((sum, k) => sum + (partOf(r, k) ?? 0), 0);
      return Math.max(0, r.apply_s - known);
    });
    return [
      // Always all parts, in one order: upsertChart updates datasets by position.
      ...APPLY_PARTS.map((k) => ({
        label: k + " s", data: rounds.map((r) => partOf(r, k)), backgroundColor: colours[k],
      })),
      { label: "apply s (other)", data: rest, backgroundColor: "#9fb8a6" },
    ];
  }

  function roundTimesChart() {
    const rounds = realRounds(state.rounds);
    const labels = rounds.map((r) => String(r.round));
    const series = (key) => rounds.map((r) => (typeof r[key] === "number" ? r[key] : null));
    upsertChart("roundTimes", "chart-round-times", {
      type: "bar",
      data: {
        labels: labels,
        datasets: [
          { label: "train s", data: series("train_s"), backgroundColor: "#2f6fde" },
          { label: "aggregate s", data: series("aggregate_s"), backgroundColor: "#e39d2d" },
          ...applyDatasets(rounds),
        ],
      },
      options: { scales: { x: { stacked: true, title: { display: true, text: "round" } }, y: { stacked: true, title: { display: true, text: "seconds" } } } },
    });
  }

  // The apply step's parts (docs/api.md): apply, eval, samples, checkpoint, publish.
  const APPLY_PARTS = ["apply", "eval", "samples", "checkpoint", "publish"];
  function applyParts(r) {
    const parts = r && r.apply_parts && typeof r.apply_parts === "object" ? r.apply_parts : {};
    return APPLY_PARTS.filter((k) => typeof parts[k] === "number").map((k) => [k, parts[k]]);
  }
  function applyCell(r) {
    const cell = el("td", { cls: "num apply", text: num(r.apply_s, 2) ?? null });
    const parts = applyParts(r);
    if (parts.length) {
      const text = parts.map(([k, v]) => k + " " + num(v, 2)).join(" · ");
      cell.title = text;
      cell.appendChild(el("span", { cls: "parts", text: text }));
    }
    return cell;
  }

  function renderRounds() {
    const rows = state.rounds.slice().reverse();
    fillBody("rounds-table", rows, (r) => {
      const members = r.group ?? r.members;
      const ok = r.status === "complete" || r.status === "local_only" || r.status === "initial";
      return el("tr", null, [
        td(r.round, "num"),
        el("td", { cls: ok ? "status-ok" : (["aborted", "failed", "refused"].includes(r.status) ? "status-bad" : ""), text: r.status ?? null }),
        el("td", { cls: "group", title: Array.isArray(members) ? members.join("\n") : null, text: list(members) ?? members ?? null }),
        el("td", { cls: "roles", text: r.aggregator || r.decryptor ? (nameOf(r.aggregator) ?? "–") + " → " + (nameOf(r.decryptor) ?? "–") : null }),
        el("td", { title: list(r.survivors), text: count(r.survivors) ?? null, cls: "num" }),
        el("td", { title: list(r.dropped), text: Array.isArray(r.dropped) ? (r.dropped.length ? list(r.dropped) : "none") : (r.dropped ?? null) }),
        td(r.bytes_sent == null && r.bytes_received == null ? null : (bytes(r.bytes_sent) ?? "–") + " / " + (bytes(r.bytes_received) ?? "–"), "num"),
        td(num(r.train_s, 2), "num"),
        td(num(r.aggregate_s, 2), "num"),
        applyCell(r),
        td(r.protocol ?? null, "protocol"),
        el("td", { cls: "note", text: r.note ?? null }),
      ]);
    });
    roundTimesChart();
  }

  function upsertChart(key, canvasId, config) {
    if (typeof window.Chart !== "function") return; // tables still show everything
    const existing = state.charts[key];
    if (existing) {
      existing.data.labels = config.data.labels;
      config.data.datasets.forEach((ds, i) => {
        if (existing.data.datasets[i]) existing.data.datasets[i].data = ds.data;
      });
      existing.update("none");
      return;
    }
    config.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false,
      spanGaps: true, interaction: { mode: "index", intersect: false } }, config.options || {});
    state.charts[key] = new window.Chart(byId(canvasId), config);
  }

  // [eval]: loss per set on the left axis, exact match / Rouge-L / refusal rate (0-1) on the right.
  function renderEvaluation() {
    const e = state.evaluation || {};
    const results = Array.isArray(e.results) ? e.results : [];
    setText("eval-summary", !e.enabled
      ? "per-round evaluation is off: list sets under [eval] in the daemon's config (docs/safety.md)"
      : results.length ? "every " + e.every_rounds + " round(s), at most " + e.max_rows + " rows per set"
        : "no scores yet: the [eval] sets are scored after each " + e.every_rounds + " round(s)");
    const rounds = Array.from(new Set(results.map((r) => r.round))).sort((a, b) => a - b);
    const palette = ["#2f6fde", "#1a7f37", "#e39d2d", "#7a4cc2", "#c2364c", "#0f8a8a"];
    const datasets = [];
    // one colour per set, one line style per measure
    const measures = [["loss", "loss", "y", []], ["exact_match", "exact match", "y1", [6, 3]],
      ["rouge_l", "Rouge-L", "y1", [2, 2]], ["refusal_rate", "refusal rate", "y1", [8, 3, 2, 3]]];
    const names = Array.from(new Set(results.map((r) => r.name)));
    names.forEach((name, i) => {
      const mine = results.filter((r) => r.name === name);
      for (const [key, label, axis, dash] of measures) {
        if (!mine.some((r) => typeof r[key] === "number")) continue;
        const at = new Map(mine.map((r) => [r.round, r[key]]));
        const colour = palette[i % palette.length];
        datasets.push({ label: name + ": " + label, yAxisID: axis, borderColor: colour, backgroundColor: colour,
          borderDash: dash,
          data: rounds.map((r) => (typeof at.get(r) === "number" ? at.get(r) : null)) });
      }
    });
    const old = state.charts.evalSets; // sets appear as rounds are scored: redraw when they do
    if (old && old.data.datasets.length !== datasets.length) { old.destroy(); delete state.charts.evalSets; }
    upsertChart("evalSets", "chart-eval-sets", {
      type: "line",
      data: { labels: rounds.map(String), datasets: datasets },
      options: { scales: { x: { title: { display: true, text: "round" } },
        y: { position: "left", title: { display: true, text: "loss" } },
        y1: { position: "right", min: 0, max: 1, grid: { drawOnChartArea: false }, title: { display: true, text: "share" } } } },
    });
    fillBody("eval-table", results.slice().reverse(), (r) => el("tr", null, [
      td(r.round, "num"), el("td", { text: r.name, title: r.path }), td(r.rows, "num"), td(num(r.loss), "num"),
      td(num(r.exact_match), "num"), td(num(r.rouge_l), "num"), td(num(r.refusal_rate), "num"),
    ]));
  }

  function renderTraining() {
    const t = state.training || {};
    const perRound = Array.isArray(t.rounds) ? realRounds(t.rounds) : [];
    const series = (key) => perRound.map((r) => (typeof r[key] === "number" ? r[key] : null));
    upsertChart("roundLoss", "chart-round-loss", {
      type: "line",
      data: {
        labels: perRound.map((r) => String(r.round)),
        datasets: [
          { label: "train loss", data: series("train_loss"), borderColor: "#2f6fde", backgroundColor: "#2f6fde" },
          { label: "eval before aggregation", data: series("eval_loss_before"), borderColor: "#e39d2d", backgroundColor: "#e39d2d" },
          { label: "eval after aggregation", data: series("eval_loss_after"), borderColor: "#1a7f37", backgroundColor: "#1a7f37" },
        ],
      },
      options: { scales: { x: { title: { display: true, text: "round" } }, y: { title: { display: true, text: "loss" } } } },
    });
    upsertChart("overviewLoss", "chart-overview-loss", {
      type: "line",
      data: {
        labels: perRound.map((r) => String(r.round)),
        datasets: [
          { label: "eval before aggregation", data: series("eval_loss_before"), borderColor: "#e39d2d", backgroundColor: "#e39d2d" },
          { label: "eval after aggregation", data: series("eval_loss_after"), borderColor: "#1a7f37", backgroundColor: "#1a7f37" },
        ],
      },
      options: { scales: { x: { title: { display: true, text: "round" } } } },
    });
    fillBody("loss-table", perRound.slice().reverse(), (r) => el("tr", null, [
      td(r.round, "num"), td(num(r.train_loss), "num"), td(num(r.eval_loss_before), "num"), td(num(r.eval_loss_after), "num"),
    ]));

    const steps = Array.isArray(t.steps) ? t.steps : [];
    upsertChart("stepLoss", "chart-step-loss", {
      type: "line",
      data: {
        labels: steps.map((s) => s.round + ":" + s.step),
        datasets: [{ label: "training loss per step", data: steps.map((s) => (typeof s.loss === "number" ? s.loss : null)),
          borderColor: "#7a4cc2", backgroundColor: "#7a4cc2", pointRadius: 0, borderWidth: 1.5 }],
      },
      options: { scales: { x: { title: { display: true, text: "round:step" }, ticks: { maxTicksLimit: 12 } } } },
    });
    stepsSummary(steps);

    const samples = Array.isArray(t.samples) ? t.samples.slice().sort((a, b) => (b.round ?? 0) - (a.round ?? 0)) : [];
    const box = document.createElement("div");
    box.id = "samples";
    if (!samples.length) {
      const n = t.samples_per_round;
      box.appendChild(el("p", { cls: "muted", text: n === 0
        ? "samples are off: [train] samples_per_round = 0 in the daemon's config"
        : "no samples yet: after each round the daemon records [train] samples_per_round (default 2) greedy completions of its first eval prompts" }));
    }
    for (const s of samples) {
      box.appendChild(el("div", { cls: "sample" }, [
        el("div", { cls: "muted", text: "round " + s.round }),
        el("pre", { cls: "prompt", text: s.prompt ?? "" }),
        el("pre", { text: s.output ?? "" }),
      ]));
    }
    byId("samples").replaceWith(box);
  }

  function stepsSummary(steps) {
    const last = steps.length ? steps[steps.length - 1] : null;
    setText("steps-summary", steps.length
      ? steps.length + " steps recorded; latest: round " + last.round + " step " + last.step + ", loss " + num(last.loss)
      : "no steps recorded yet");
  }

  // ---------- FedMKT ----------
  function fedmktOn() {
    return Boolean((state.fedmkt && state.fedmkt.enabled === true) || (state.status && state.status.mode === "fedmkt"));
  }
  function orgOr(org, id) { return typeof org === "string" && org ? org : nameOf(id); }
  function lines(items, makeLine) {
    const cell = el("td");
    if (!items.length) cell.textContent = "–";
    for (const item of items) cell.appendChild(makeLine(item));
    return cell;
  }

  // own-domain (eval set) loss after local training -> after distillation; a rise is marked
  function ownLossCell(r) {
    const before = num(r.own_loss_before), after = num(r.own_loss_after);
    if (before === null || after === null) return td(null, "num");
    const change = typeof r.own_loss_change === "number" ? r.own_loss_change : null;
    const text = before + " → " + after + (change === null ? "" : " (" + (change > 0 ? "+" : "") + (100 * change).toFixed(1) + " %)");
    return el("td", { cls: "num own-loss" + (change !== null && change > 0 ? " status-bad" : ""), text: text,
      title: change !== null && change > 0 ? "distillation raised the loss on this member's own data" : "" });
  }

  function renderFedMKT() {
    const f = state.fedmkt || {};
    const rounds = Array.isArray(f.rounds) ? realRounds(f.rounds).slice().reverse() : [];
    fillBody("fedmkt-table", rounds, (r) => {
      const edges = Array.isArray(r.edges) ? r.edges : [];
      const losses = Array.isArray(r.public_losses) ? r.public_losses.filter((m) => m && typeof m === "object") : [];
      const finite = losses.map((m) => m.loss).filter((v) => typeof v === "number" && isFinite(v));
      const best = finite.length ? Math.min(...finite) : null;
      const d = r.distill && typeof r.distill === "object" ? r.distill : null;
      const dropped = Array.isArray(r.dropped) ? r.dropped : [];
      return el("tr", null, [
        td(r.round, "num"),
        el("td", { cls: r.status === "complete" ? "status-ok" : (["aborted", "refused"].includes(r.status) ? "status-bad" : ""), text: r.status ?? null }),
        el("td", { cls: "exchange", text: r.exchange === "secure" ? "secure (group average)" : (r.exchange === "clear" ? "clear (top-k)" : "–") }),
        lines(edges, (e) => el("div", { cls: "edge", title: String(e.teacher) + " → " + String(e.student),
          text: orgOr(e.teacher_org, e.teacher) + " → " + orgOr(e.student_org, e.student) })),
        td(typeof r.aligned_fraction === "number" ? (100 * r.aligned_fraction).toFixed(0) + " %" : null, "num"),
        lines(losses, (m) => el("div", { cls: "model-loss" + (best !== null && m.loss === best ? " best" : ""), title: m.peer_id,
          text: orgOr(m.org, m.peer_id) + ": " + (num(m.loss) ?? "–") })),
        ownLossCell(r),
        el("td", { text: dropped.length ? dropped.map(nameOf).join(", ") : "none" }),
        td(d && typeof d.first_loss === "number" ? num(d.first_loss) + " → " + num(d.last_loss) : null, "num"),
      ]);
    });
    let summary = rounds.length ? rounds.length + " FedMKT round(s) recorded" : "no FedMKT rounds yet";
    if (typeof f.own_loss_start === "number" && typeof f.own_loss_latest === "number") {
      summary += "; own-domain loss " + num(f.own_loss_start) + " before training, " + num(f.own_loss_latest) + " now";
    }
    setText("fedmkt-summary", summary);
  }

  // ---------- FedKSeed ----------
  function fedkseedOn() {
    return Boolean((state.fedkseed && state.fedkseed.enabled === true) || (state.status && state.status.mode === "fedkseed"));
  }

  function renderFedKSeed() {
    const f = state.fedkseed || {};
    const k = typeof f.k === "number" ? f.k : null;
    const rounds = Array.isArray(f.rounds) ? realRounds(f.rounds).slice().reverse() : [];
    fillBody("fedkseed-table", rounds, (r) => el("tr", null, [
      td(r.round, "num"),
      el("td", { cls: r.status === "complete" ? "status-ok" : (["aborted", "refused"].includes(r.status) ? "status-bad" : ""), text: r.status ?? null }),
      td(typeof r.bytes_sent === "number" ? r.bytes_sent.toLocaleString() : null, "num"),
      td(typeof r.bytes_received === "number" ? r.bytes_received.toLocaleString() : null, "num"),
      td(num(r.train_loss), "num"),
      td(num(r.eval_loss_after), "num"),
      td(typeof r.seeds_used === "number" ? r.seeds_used + (k !== null ? " of " + k : "") : null, "num"),
      td(typeof r.clipped === "number" ? r.clipped : null, "num"),
      td(typeof r.replay_s === "number" ? r.replay_s.toFixed(2) + " s" : null, "num"),
      el("td", { cls: "mono", text: typeof r.parameters_fingerprint === "string" ? r.parameters_fingerprint : null }),
    ]));
    setText("fedkseed-summary", rounds.length ? rounds.length + " FedKSeed round(s) recorded" : "no FedKSeed rounds yet");
  }

  // ---------- Offsite ----------
  function offsiteOn() {
    return Boolean((state.offsite && state.offsite.enabled === true) || (state.status && state.status.mode === "offsite"));
  }

  function fetchText(f) {
    if (!f || typeof f !== "object") return null;
    if (f.state === "waiting") return "waiting for the model owner";
    const of = typeof f.bytes_total === "number" ? " of " + bytes(f.bytes_total) : "";
    if (f.state === "fetching") return "fetching: " + bytes(f.bytes_fetched) + of;
    if (f.state === "verified") return "verified" + (typeof f.bytes_total === "number" ? " (" + bytes(f.bytes_total) + ")" : "");
    return f.state ?? null;
  }

  function renderOffsite() {
    const o = state.offsite || {};
    const p = o.package && typeof o.package === "object" ? o.package : null;
    const owner = o.owner_state && typeof o.owner_state === "object" ? o.owner_state : null;
    setText("offsite-reveals", o.reveals);
    setText("off-role", o.role === "model_owner" ? "model owner" : (o.role === "member" ? "data member" : o.role));
    setText("off-owner", o.owner ? (o.owner_org || short(o.owner)) : null);
    setText("off-package-id", o.package_id);
    setText("off-package", p ? bytes(p.bytes) + " in " + p.files + " files" : null);
    const adapters = p && p.adapter_layers ? p.adapter_layers : null;
    setText("off-layers", p ? p.layers_in_package + " of " + p.layers_total + " in the package: adapters bottom "
      + (adapters ? adapters.bottom : "–") + " + top " + (adapters ? adapters.top : "–") + ", " + p.middle_kept + " of "
      + p.middle_layers + " middle layers kept" + (p.distill_steps ? " (distilled, " + p.distill_steps + " steps)" : "") : null);
    setText("off-fetch", o.role === "model_owner" ? "serves the package" : fetchText(o.fetch));
    setText("off-plugged", owner ? owner.rounds_plugged_in + " round(s); last: "
      + (owner.last_plugged_in_round ?? "none") + (owner.last_plugged_in_at ? " (" + ago(owner.last_plugged_in_at) + ")" : "")
      : (o.role === "member" ? "the owner plugs in; members never see its full model" : null));
    setText("off-export", owner ? (owner.export_dir || "–") + (owner.export_written_at ? ", written " + ago(owner.export_written_at)
      : ", not written yet") : null);
    const rounds = Array.isArray(o.rounds) ? realRounds(o.rounds).slice().reverse() : [];
    fillBody("offsite-table", rounds, (r) => el("tr", null, [
      td(r.round, "num"),
      el("td", { cls: r.status === "complete" ? "status-ok" : (["aborted", "refused"].includes(r.status) ? "status-bad" : ""), text: r.status ?? null }),
      td(num(r.eval_loss_before), "num"),
      td(num(r.eval_loss_after), "num"),
      td(num(r.train_loss), "num"),
      td(typeof r.bytes_sent === "number" ? r.bytes_sent.toLocaleString() : null, "num"),
      td(typeof r.bytes_received === "number" ? r.bytes_received.toLocaleString() : null, "num"),
      td(typeof r.survivors === "number" ? r.survivors : null, "num"),
      td(r.plugged_in === true ? "yes" + (typeof r.confirmed_by === "number" ? " (" + r.confirmed_by + " confirmed)" : "")
        : (r.plugged_in === false ? "no" : null)),
    ]));
    setText("offsite-summary", rounds.length ? rounds.length + " offsite round(s) recorded" : "no offsite rounds yet");
  }

  function renderSecurity() {
    const s = state.security || {};
    setText("sec-federation", s.federation_id);
    setText("sec-roster-fp", s.roster_fingerprint);
    setText("sec-transport", s.transport);
    const params = s.secure_aggregation && typeof s.secure_aggregation === "object" ? Object.entries(s.secure_aggregation) : [];
    fillBody("secagg-table", params, ([key, value]) => el("tr", null, [
      el("th", { text: key }),
      td(typeof value === "object" && value !== null ? JSON.stringify(value) : value),
    ]));
    fillBody("roster-table", Array.isArray(s.roster) ? s.roster : [], (m) => el("tr", null, [
      td(m.org), el("td", { cls: "mono", text: m.peer_id ?? null }), el("td", { cls: "mono", text: m.key_fingerprint ?? null }),
    ]));
    const counts = s.rejected_counts && typeof s.rejected_counts === "object" ? Object.entries(s.rejected_counts) : [];
    counts.sort((a, b) => (Number(b[1]) || 0) - (Number(a[1]) || 0));
    fillBody("rejected-counts", counts.length ? counts : [["none", 0]], ([reason, n]) => el("tr", null, [td(reason), td(n, "num")]));
    const rejected = Array.isArray(s.rejected) ? s.rejected.slice().sort((a, b) => (toDate(b.ts) ?? 0) - (toDate(a.ts) ?? 0)) : [];
    if (!rejected.length) {
      const empty = el("td", { cls: "muted", text: "nothing refused" });
      empty.colSpan = 4;
      fillBody("rejected-table", [null], () => el("tr", null, [empty]));
      return;
    }
    fillBody("rejected-table", rejected, (r) => el("tr", null, [
      td(clock(r.ts) ?? r.ts), el("td", { cls: "mono", title: r.peer_id, text: nameOf(r.peer_id) ?? null }), td(r.kind), td(r.reason),
    ]));
  }

  // ---------- live events ----------
  function setLive(on, text) {
    byId("live-dot").className = "dot " + (on ? "on" : "off");
    setText("live-text", text);
  }

  function logEvent(event) {
    const log = byId("event-log");
    const show = (v) => (typeof v === "number" && !Number.isInteger(v) ? v.toPrecision(4)
      : typeof v === "object" ? JSON.stringify(v) : String(v));
    const summary = Object.entries(event).filter(([k]) => k !== "type" && k !== "ts")
      .map(([k, v]) => k + "=" + show(v)).join(" ");
    const when = toDate(event.ts) ?? new Date();
    log.insertBefore(el("li", { text: when.toLocaleTimeString() + "  " + String(event.type) + "  " + summary }), log.firstChild);
    while (log.children.length > 50) log.removeChild(log.lastChild);
  }

  // A train_step event adds its point at once; the next full refresh replaces the
  // series with the daemon's stored steps, so nothing is counted twice.
  function appendStep(event) {
    if (typeof event.loss !== "number" || typeof event.step !== "number") return;
    if (!state.training) state.training = { steps: [], rounds: [], samples: [] };
    if (!Array.isArray(state.training.steps)) state.training.steps = [];
    const steps = state.training.steps;
    const prev = steps.length ? steps[steps.length - 1] : null;
    if (prev && prev.round === event.round && prev.step === event.step) return;
    steps.push({ round: event.round, step: event.step, loss: event.loss, ts: event.ts });
    stepsSummary(steps);
    const chart = state.charts.stepLoss;
    if (!chart) return;
    chart.data.labels.push(event.round + ":" + event.step);
    chart.data.datasets[0].data.push(event.loss);
    chart.update("none");
  }

  function showLastEvent(event) {
    const when = toDate(event.ts) ?? new Date();
    setText("ov-last-event", when.toLocaleTimeString() + " — " + String(event.type));
  }

  // What happened before the page was opened: the daemon keeps its last 50 events.
  async function loadHistory() {
    const events = await getJSON("/api/events/recent");
    if (!Array.isArray(events) || !events.length) return;
    for (const event of events) if (event && typeof event === "object") logEvent(event);
    showLastEvent(events[events.length - 1]);
  }

  function onEvent(message) {
    let event;
    try { event = JSON.parse(message.data); } catch (e) { return; }
    if (!event || typeof event !== "object") return;
    state.events += 1;
    showLastEvent(event);
    if (event.type === "resync") { refreshAll().catch(() => {}); return; }
    if (typeof event.round === "number" && (state.round === null || event.round >= state.round)) showRound(event.round);
    if (typeof event.state === "string" && event.type !== "peer") setText("ov-state", event.state);
    if (event.type === "step" || event.type === "train_step") { appendStep(event); return; }
    logEvent(event);
    refreshSoon();
  }

  function connectEvents() {
    const source = new EventSource("/api/events");
    source.onopen = () => { setLive(true, "live"); refreshSoon(); };
    source.onmessage = onEvent;
    source.onerror = () => { setLive(false, "reconnecting…"); };
  }

  // ---------- tabs ----------
  function showTab() {
    const name = (location.hash || "#overview").slice(1);
    const known = ["overview", "peers", "rounds", "training", "fedmkt", "fedkseed", "offsite", "security"];
    const allowed = known.filter((tab) => (tab !== "fedmkt" || fedmktOn()) && (tab !== "fedkseed" || fedkseedOn())
      && (tab !== "offsite" || offsiteOn()));
    const current = allowed.includes(name) ? name : "overview";
    for (const tab of known) byId("tab-" + tab).hidden = tab !== current;
    const mktLink = document.querySelector(".tabs a[data-tab=fedmkt]");
    if (mktLink) mktLink.hidden = !fedmktOn();
    const kseedLink = document.querySelector(".tabs a[data-tab=fedkseed]");
    if (kseedLink) kseedLink.hidden = !fedkseedOn();
    const offsiteLink = document.querySelector(".tabs a[data-tab=offsite]");
    if (offsiteLink) offsiteLink.hidden = !offsiteOn();
    for (const link of document.querySelectorAll(".tabs a")) link.classList.toggle("active", link.dataset.tab === current);
  }

  window.addEventListener("hashchange", showTab);
  showTab();
  // ?static=1: one read of the API and the event history, no live stream or timer, so
  // the page goes idle and a headless browser's screenshot shows content
  // (docs/dashboard.md). body[data-ready] marks the moment everything is drawn.
  const snapshot = new URLSearchParams(location.search).has("static");
  const loaded = Promise.allSettled([refreshAll(), loadHistory()]);
  if (snapshot) {
    setLive(false, "snapshot (no live updates)");
    loaded.then(() => { document.body.dataset.ready = "1"; });
  } else {
    // History first, then the live stream, so live events land above the history.
    loaded.finally(connectEvents);
    setInterval(() => refreshAll().catch(() => {}), 30000);
  }
  setInterval(() => { if (state.peers.length) renderPeers(); }, 5000);
})();
