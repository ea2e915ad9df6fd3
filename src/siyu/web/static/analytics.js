// 数据分析: the stage-flow Sankey. Data comes from the element's data-sankey JSON
// ({"nodes": [{"name", "stage"}], "links": [{"source", "target", "value"}]}); names are plain text (ECharts escapes them).
(function () {
  "use strict";
  // One colour per rung, the same as the funnel's, at both ends of the flows; new customers in amber.
  var COLORS = {traffic: "#adb5bd", user: "#4299e1", customer: "#2fb344", fan: "#d6336c", "new": "#f59f00"};
  function initSankey(root) {
    if (!window.echarts) { return; }
    (root || document).querySelectorAll("[data-sankey]").forEach(function (el) {
      if (el.getAttribute("data-chart-ready")) { return; }
      el.setAttribute("data-chart-ready", "1");
      var data = JSON.parse(el.getAttribute("data-sankey"));
      // Two columns across the whole card: where customers stood when the period began (and the new ones) on
      // the left, labelled outside to the left; where they stood at its end on the right, labelled to the right.
      var targets = {};
      data.links.forEach(function (link) { targets[link.target] = true; });
      var nodes = data.nodes.map(function (node) {
        var end = !!targets[node.name];
        return {name: node.name, depth: end ? 1 : 0, label: {position: end ? "right" : "left"},
                itemStyle: {color: COLORS[node.stage] || "#adb5bd"}};
      });
      var chart = window.echarts.init(el, null, {renderer: "svg"});
      var margin = Math.min(120, Math.max(72, Math.round(el.clientWidth * 0.16)));
      chart.setOption({
        textStyle: {fontFamily: getComputedStyle(document.body).fontFamily},
        color: ["#adb5bd", "#4299e1", "#2fb344", "#d6336c", "#f59f00"],
        tooltip: {trigger: "item"},
        series: [{type: "sankey", left: margin, right: margin, top: 12, bottom: 12, nodeWidth: 14, nodeGap: 12,
                  nodeAlign: "justify", layoutIterations: 32, draggable: false, emphasis: {focus: "adjacency"},
                  label: {fontSize: 12, overflow: "truncate", width: margin - 8},
                  lineStyle: {color: "gradient", opacity: 0.4}, data: nodes, links: data.links}]
      });
      chart.on("finished", function () { el.setAttribute("data-chart-drawn", "1"); });
      // Follow the card's width (the grid reflows at breakpoints, a scrollbar comes and goes), not only the window's.
      if (window.ResizeObserver) {
        new ResizeObserver(function () { chart.resize(); }).observe(el);
      } else {
        window.addEventListener("resize", function () { chart.resize(); });
      }
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { initSankey(document); });
  } else {
    initSankey(document);
  }
  document.addEventListener("htmx:load", function (event) { initSankey(event.detail.elt); });
  // The weekly report's print button (no inline handlers: the console's CSP allows none).
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-print]");
    if (button) { window.print(); }
  });
})();
