// Siyu console behaviour. No inline scripts anywhere (CSP): pages opt in through data attributes.
(function () {
  "use strict";

  if (window.htmx) {
    // A 422 answer carries the form again with the problem named: swap it like a success.
    window.htmx.config.responseHandling = [
      {code: "204", swap: false},
      {code: "[23]..", swap: true},
      {code: "422", swap: true, error: false},
      {code: "[45]..", swap: false, error: true},
      {code: "...", swap: false}
    ];
  }

  document.addEventListener("htmx:configRequest", function (event) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) { event.detail.headers["X-CSRF-Token"] = meta.content; }
  });

  // Errors go next to the form that caused them (data-error-target), else to the page's flash area.
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    if (!xhr || !xhr.responseText) { return; }
    var source = event.detail.elt && event.detail.elt.closest ? event.detail.elt.closest("[data-error-target]") : null;
    var target = source ? document.querySelector(source.getAttribute("data-error-target")) : null;
    target = target || document.getElementById("flash");
    if (target) {
      target.innerHTML = xhr.responseText;
      if (target.scrollIntoView) { target.scrollIntoView({block: "nearest"}); }
    }
  });
  document.addEventListener("htmx:sendError", function () {
    var target = document.getElementById("flash");
    if (target) {
      var alert = document.createElement("div");
      alert.className = "alert alert-danger";
      alert.setAttribute("role", "alert");
      alert.textContent = document.documentElement.lang === "en"
        ? "The server could not be reached; check the connection and retry."
        : "无法连接服务器，请检查网络后重试。";
      target.replaceChildren(alert);
    }
  });

  // Forms marked data-reset-on-success are emptied after a successful htmx post.
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt;
    var ok = event.detail.successful && event.detail.xhr && event.detail.xhr.status < 300;
    if (ok && form && form.matches && form.matches("form[data-reset-on-success]")) {
      form.reset();
      toggleAmount(form);
    }
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-confirm]");
    if (button && !window.confirm(button.getAttribute("data-confirm"))) { event.preventDefault(); }
  });

  // The touch form: the amount field only matters for a purchase.
  function toggleAmount(root) {
    (root || document).querySelectorAll("[data-amount-toggle]").forEach(function (select) {
      var form = select.closest("form");
      var field = form && form.querySelector("[data-amount-field]");
      if (field) { field.hidden = select.value !== "purchase"; }
    });
  }
  document.addEventListener("change", function (event) {
    if (event.target.matches && event.target.matches("[data-amount-toggle]")) { toggleAmount(event.target.closest("form")); }
  });

  // The relationship-ladder funnel: data comes from the element's data-funnel JSON.
  function initCharts(root) {
    if (!window.echarts) { return; }
    (root || document).querySelectorAll("[data-funnel]").forEach(function (el) {
      if (el.getAttribute("data-chart-ready")) { return; }
      el.setAttribute("data-chart-ready", "1");
      var data = JSON.parse(el.getAttribute("data-funnel"));
      var chart = window.echarts.init(el, null, {renderer: "svg"});
      var font = getComputedStyle(document.body).fontFamily;
      chart.setOption({
        textStyle: {fontFamily: font},
        color: ["#adb5bd", "#4299e1", "#2fb344", "#d6336c"],
        tooltip: {
          trigger: "item",
          formatter: function (p) {
            return p.name + "<br>" + data.reached + ": " + p.value.toLocaleString() +
              "<br>" + data.current + ": " + p.data.current.toLocaleString();
          }
        },
        series: [{
          type: "funnel", sort: "none", left: "10%", width: "80%", top: 10, bottom: 10, minSize: "8%", gap: 2,
          // Dark text: the stage colours are light tints, on which white labels could not be read.
          label: {show: true, position: "inside", color: "#1d273b", fontFamily: font,
                  formatter: function (p) { return p.name + "  " + p.value.toLocaleString(); }},
          data: data.items
        }]
      });
      window.addEventListener("resize", function () { chart.resize(); });
    });
  }

  // Line and bar charts: data-chart holds {"x": [...], "series": [{"name", "data"}]}; names are
  // plain text (ECharts escapes them in its tooltip), so user-typed names cannot become markup.
  function initSimpleCharts(root) {
    if (!window.echarts) { return; }
    (root || document).querySelectorAll("[data-chart]").forEach(function (el) {
      if (el.getAttribute("data-chart-ready")) { return; }
      el.setAttribute("data-chart-ready", "1");
      var data = JSON.parse(el.getAttribute("data-chart"));
      var kind = el.getAttribute("data-chart-kind") || "line";
      var chart = window.echarts.init(el, null, {renderer: "svg"});
      chart.setOption({
        textStyle: {fontFamily: getComputedStyle(document.body).fontFamily},
        color: ["#4299e1", "#2fb344", "#f59f00", "#d6336c"],
        tooltip: {trigger: "axis"},
        legend: {top: 0},
        grid: {left: 40, right: 16, top: 32, bottom: 40},
        xAxis: {type: "category", data: data.x},
        yAxis: {type: "value", minInterval: 1},
        series: data.series.map(function (s) {
          return {name: s.name, type: kind, data: s.data, smooth: kind === "line", showSymbol: false};
        })
      });
      window.addEventListener("resize", function () { chart.resize(); });
    });
  }

  // Panels that start folded on a phone and open on a wide screen.
  function openWide(root) {
    if (window.innerWidth < 992) { return; }
    (root || document).querySelectorAll("details[data-open-wide]").forEach(function (el) { el.open = true; });
  }

  function init(root) { toggleAmount(root); initCharts(root); initSimpleCharts(root); }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { init(document); openWide(document); });
  } else {
    init(document);
    openWide(document);
  }
  document.addEventListener("htmx:load", function (event) { init(event.detail.elt); });
})();

// Grouped navigation: one group open at a time; a click elsewhere or Escape closes it.
(function () {
  "use strict";
  function closeMenus(except) {
    document.querySelectorAll(".siyu-menu details[open]").forEach(function (menu) {
      if (!except || !menu.contains(except)) { menu.removeAttribute("open"); }
    });
  }
  document.addEventListener("click", function (event) { closeMenus(event.target); });
  document.addEventListener("keydown", function (event) { if (event.key === "Escape") { closeMenus(null); } });
})();
