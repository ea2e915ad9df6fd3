// 数据分析: the stage-flow Sankey. Data comes from the element's data-sankey JSON
// ({"nodes": [{"name"}], "links": [{"source", "target", "value"}]}); names are plain text (ECharts escapes them).
(function () {
  "use strict";
  function initSankey(root) {
    if (!window.echarts) { return; }
    (root || document).querySelectorAll("[data-sankey]").forEach(function (el) {
      if (el.getAttribute("data-chart-ready")) { return; }
      el.setAttribute("data-chart-ready", "1");
      var data = JSON.parse(el.getAttribute("data-sankey"));
      var chart = window.echarts.init(el, null, {renderer: "svg"});
      chart.setOption({
        textStyle: {fontFamily: getComputedStyle(document.body).fontFamily},
        color: ["#adb5bd", "#4299e1", "#2fb344", "#d6336c", "#f59f00"],
        tooltip: {trigger: "item"},
        series: [{type: "sankey", left: 10, right: 90, top: 10, bottom: 10, nodeGap: 10, emphasis: {focus: "adjacency"},
                  lineStyle: {color: "gradient", opacity: 0.4}, data: data.nodes, links: data.links}]
      });
      window.addEventListener("resize", function () { chart.resize(); });
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { initSankey(document); });
  } else {
    initSankey(document);
  }
  document.addEventListener("htmx:load", function (event) { initSankey(event.detail.elt); });
})();
