// Frames per minute over the last hour (in, out, errors), drawn with uPlot from static/vendor.
(function () {
  "use strict";

  const box = document.getElementById("chart");
  if (!box || !window.uPlot) return;
  const REFRESH_MS = 15000;
  let plot = null;

  function options(width) {
    return {
      width, height: Number(box.dataset.height || 260),
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(5, Math.ceil(max * 1.15))] } },
      axes: [
        { stroke: "#66717e", grid: { stroke: "#eef1f4" }, values: (u, ticks) => ticks.map((t) => {
          const d = new Date(t * 1000);
          return `${String(d.getUTCHours()).padStart(2, "0")}:${String(d.getUTCMinutes()).padStart(2, "0")}`;
        }) },
        { stroke: "#66717e", grid: { stroke: "#eef1f4" }, label: "frames / min", size: 56 },
      ],
      series: [
        { label: "minute (UTC)", value: (u, t) => t == null ? "—" : new Date(t * 1000).toISOString().slice(11, 16) },
        { label: "in", stroke: "#1769aa", width: 2, fill: "rgba(23,105,170,.08)", points: { show: false } },
        { label: "out", stroke: "#6b4bb3", width: 2, dash: [6, 4], points: { show: false } },
        { label: "errors", stroke: "#b3261e", width: 2, fill: "rgba(179,38,30,.10)", points: { show: false } },
      ],
    };
  }

  async function load() {
    try {
      const r = await fetch(box.dataset.url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!r.ok) return;
      const s = await r.json();
      const data = [s.t, s.in, s.out, s.errors];
      if (plot) plot.setData(data);
      else plot = new uPlot(options(box.clientWidth), data, box);
    } finally {
      setTimeout(load, REFRESH_MS);
    }
  }
  window.addEventListener("resize", () => { if (plot) plot.setSize({ width: box.clientWidth, height: plot.height }); });
  load();
})();
