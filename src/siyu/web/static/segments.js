// The segment builder (客户分群): rows of conditions → the JSON tree in #segment-conditions, and a
// live count and sample from GET /segments/count while editing. Every name shown is set with
// textContent (never markup). Nested groups are edited in the JSON box; the rows show a flat tree.
(function () {
  "use strict";
  var form = document.getElementById("segment-form");
  if (!form) { return; }
  var options = JSON.parse(form.getAttribute("data-builder"));
  var rows = document.getElementById("segment-rows");
  var box = document.getElementById("segment-conditions");
  var join = document.getElementById("segment-join");
  var countEl = document.getElementById("segment-count");
  var errorEl = document.getElementById("segment-count-error");
  var sampleEl = document.getElementById("segment-sample");
  var addKind = document.getElementById("segment-add-kind");
  var T = options.text;
  var timer = null;
  var asked = 0;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function select(items, value, attrs, multiple) {
    var node = el("select", attrs);
    node.className = "form-select form-select-sm";
    if (multiple) { node.multiple = true; node.size = Math.min(4, Math.max(2, items.length)); }
    items.forEach(function (item) {
      var opt = el("option", {value: String(item.id)}, item.name);
      var chosen = Array.isArray(value) ? value.map(String).indexOf(String(item.id)) >= 0 : String(value) === String(item.id);
      if (chosen) { opt.selected = true; }
      node.appendChild(opt);
    });
    return node;
  }

  function input(type, value, attrs) {
    var node = el("input", attrs);
    node.type = type;
    node.className = "form-control form-control-sm";
    node.value = value === undefined || value === null ? "" : String(value);
    return node;
  }

  function labelled(text, control) {
    var wrap = el("label", {"class": "d-flex flex-column small"});
    wrap.appendChild(el("span", {}, text));
    wrap.appendChild(control);
    return wrap;
  }

  var opsList = Object.keys(options.ops).map(function (k) { return {id: k, name: options.ops[k]}; });
  var kindName = {};
  options.kinds.forEach(function (k) { kindName[k.id] = k.name; });

  // Each kind: how its inputs are drawn from a leaf, and how a leaf is read back from them.
  var KINDS = {
    tag: {draw: function (p, l) { p.appendChild(select(options.tags, l.tag_ids || [], {"data-key": "tag_ids", "aria-label": kindName.tag}, true)); },
          read: function (p) { return {tag_ids: ints(p, "tag_ids")}; }},
    rfm: {draw: function (p, l) { p.appendChild(select(options.rfm, l.segments || [], {"data-key": "segments", "aria-label": kindName.rfm}, true)); },
          read: function (p) { return {segments: strs(p, "segments")}; }},
    stage: {draw: function (p, l) { p.appendChild(select(options.stages, l.stages || [], {"data-key": "stages", "aria-label": kindName.stage}, true)); },
            read: function (p) { return {stages: strs(p, "stages")}; }},
    level: {draw: function (p, l) { p.appendChild(input("text", (l.levels || []).join(","), {"data-key": "levels", "aria-label": kindName.level})); },
            read: function (p) { return {levels: val(p, "levels").split(/[,，]/).map(function (s) { return s.trim(); }).filter(Boolean)}; }},
    field: {draw: function (p, l) {
              p.appendChild(select(options.fields, l.field || "city", {"data-key": "field", "aria-label": kindName.field}));
              p.appendChild(select(opsList.filter(function (o) { return o.id !== "gte" && o.id !== "lte"; }), l.op || "eq", {"data-key": "op", "aria-label": T.value}));
              p.appendChild(input("text", l.value, {"data-key": "value", "aria-label": T.value, maxlength: "200"})); },
            read: function (p) { return {field: val(p, "field"), op: val(p, "op"), value: val(p, "value")}; }},
    custom_field: {draw: function (p, l) {
              p.appendChild(select(options.custom_fields, l.field_id || "", {"data-key": "field_id", "aria-label": kindName.custom_field}));
              p.appendChild(select(opsList, l.op || "eq", {"data-key": "op", "aria-label": T.value}));
              p.appendChild(input("text", l.value, {"data-key": "value", "aria-label": T.value, maxlength: "200"})); },
            read: function (p) { return {field_id: parseInt(val(p, "field_id"), 10), op: val(p, "op"), value: val(p, "value")}; }},
    bought: {draw: function (p, l) {
              p.appendChild(labelled(T.category, input("text", l.category, {"data-key": "category", maxlength: "64"})));
              p.appendChild(labelled(T.days, input("number", l.days || 90, {"data-key": "days", min: "1", max: "3650"}))); },
             read: function (p) { return {category: val(p, "category"), days: num(p, "days")}; }},
    spent: {draw: function (p, l) { p.appendChild(labelled(T.amount, input("number", l.min_amount || 500, {"data-key": "min_amount", min: "0", step: "0.01"}))); },
            read: function (p) { return {min_amount: val(p, "min_amount") || "0"}; }},
    no_purchase: {draw: function (p, l) { p.appendChild(labelled(T.days, input("number", l.days || 90, {"data-key": "days", min: "1", max: "3650"}))); },
                  read: function (p) { return {days: num(p, "days")}; }},
    no_touch: {draw: function (p, l) { p.appendChild(labelled(T.days, input("number", l.days || 30, {"data-key": "days", min: "1", max: "3650"}))); },
               read: function (p) { return {days: num(p, "days")}; }},
    channel: {draw: function (p, l) { p.appendChild(select(options.channels, l.channel_ids || [], {"data-key": "channel_ids", "aria-label": kindName.channel}, true)); },
              read: function (p) { return {channel_ids: ints(p, "channel_ids")}; }},
    group_chat: {draw: function (p, l) { p.appendChild(select(options.groups, l.group_ids || [], {"data-key": "group_ids", "aria-label": kindName.group_chat}, true)); },
                 read: function (p) { return {group_ids: ints(p, "group_ids")}; }},
    account: {draw: function (p, l) { p.appendChild(select(options.accounts, l.account_ids || [], {"data-key": "account_ids", "aria-label": kindName.account}, true)); },
              read: function (p) { return {account_ids: ints(p, "account_ids")}; }},
    group_kind: {draw: function (p, l) {
                   p.appendChild(select(options.group_kinds || [], l.group_kinds || [], {"data-key": "group_kinds", "aria-label": kindName.group_kind}, true));
                   p.appendChild(select(options.group_roles || [], l.roles || [], {"data-key": "roles", "aria-label": kindName.group_kind}, true)); },
                 read: function (p) { return {group_kinds: strs(p, "group_kinds"), roles: strs(p, "roles")}; }}
  };

  function field(p, key) { return p.querySelector("[data-key='" + key + "']"); }
  function val(p, key) { var f = field(p, key); return f ? f.value : ""; }
  function num(p, key) { return parseInt(val(p, key), 10) || 0; }
  function strs(p, key) { var f = field(p, key); return f ? Array.prototype.filter.call(f.options, function (o) { return o.selected; }).map(function (o) { return o.value; }) : []; }
  function ints(p, key) { return strs(p, key).map(function (v) { return parseInt(v, 10); }); }

  function addRow(leaf) {
    var kind = KINDS[leaf.kind];
    if (!kind) { return; }
    var row = el("div", {"class": "d-flex flex-wrap align-items-end gap-2 mb-2 p-2 border rounded", "data-kind": leaf.kind, "data-testid": "segment-row"});
    row.appendChild(el("strong", {"class": "small me-1"}, kindName[leaf.kind]));
    var params = el("div", {"class": "d-flex flex-wrap gap-2 align-items-end"});
    kind.draw(params, leaf);
    row.appendChild(params);
    var remove = el("button", {type: "button", "class": "btn btn-sm btn-outline-danger ms-auto"}, T.remove);
    remove.addEventListener("click", function () { row.remove(); sync(); });
    row.appendChild(remove);
    rows.appendChild(row);
  }

  function tree() {
    var conditions = Array.prototype.map.call(rows.children, function (row) {
      var leaf = KINDS[row.getAttribute("data-kind")].read(row);
      leaf.kind = row.getAttribute("data-kind");
      return leaf;
    });
    return {kind: join.value, conditions: conditions};
  }

  function sync() {
    box.value = JSON.stringify(tree());
    schedule();
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(count, 300);
  }

  function count() {
    var text = box.value;
    var parsed = null;
    try { parsed = JSON.parse(text); } catch (e) { parsed = null; }
    if (!parsed || !parsed.conditions || !parsed.conditions.length) {
      countEl.textContent = T.none; errorEl.textContent = ""; sampleEl.textContent = "";
      return;
    }
    var mine = ++asked;
    countEl.textContent = T.counting;
    fetch("/segments/count?conditions=" + encodeURIComponent(text), {headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (r) { return r.json().then(function (body) { return {ok: r.ok, body: body}; }); })
      .then(function (res) {
        if (mine !== asked) { return; }
        sampleEl.textContent = "";
        if (!res.ok) { countEl.textContent = ""; errorEl.textContent = res.body.error || res.body.detail || ""; return; }
        errorEl.textContent = "";
        var n = res.body.exact ? res.body.count : (res.body.estimate || res.body.count);
        countEl.textContent = (res.body.exact ? T.count : T.about).replace("{n}", n.toLocaleString("zh-CN"));
        res.body.sample.forEach(function (c) {
          var li = el("li");
          li.appendChild(el("a", {href: "/customers/" + c.id}, c.remark_name || c.name));
          sampleEl.appendChild(li);
        });
      })
      .catch(function () { if (mine === asked) { countEl.textContent = ""; } });
  }

  options.kinds.forEach(function (k) { addKind.appendChild(el("option", {value: k.id}, k.name)); });
  document.getElementById("segment-add").addEventListener("click", function () {
    addRow({kind: addKind.value}); sync();
  });
  rows.addEventListener("change", sync);
  rows.addEventListener("input", sync);
  join.addEventListener("change", sync);
  box.addEventListener("input", schedule);

  var initial = JSON.parse(form.getAttribute("data-conditions") || "null") || {kind: "and", conditions: []};
  var flat = (initial.conditions || []).every(function (c) { return KINDS[c.kind]; });
  join.value = initial.kind === "or" ? "or" : "and";
  if (flat) {
    initial.conditions.forEach(addRow);
  } else {
    // Nested groups: edited as JSON; the rows stay empty until the tree is flat again.
    document.getElementById("segment-advanced").open = true;
    rows.hidden = true;
  }
  if (initial.conditions && initial.conditions.length) { count(); } else { countEl.textContent = countEl.textContent || T.none; }
})();
