/* Admin dashboard charts: the data comes from the page's JSON block (#admin-chart-data), never inline code (CSP). */
(function () {
  "use strict";
  var block = document.getElementById("admin-chart-data");
  if (!block || typeof Chart === "undefined") { return; }
  var data = JSON.parse(block.textContent);
  var accent = "#4f46e5";
  var sky = "#38bdf8";
  var grid = "rgba(148, 163, 184, 0.18)";
  var money = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumFractionDigits: 0 });
  var shortDate = function (iso) {
    var d = new Date(iso + "T00:00:00Z");
    return d.toLocaleDateString("en-US", { month: "short", day: "numeric", timeZone: "UTC" });
  };

  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.color = "#64748b";
  Chart.defaults.animation = false;
  // At most one date label per 72 px of axis: on a phone "Sep 30" never runs into "Oct 13".
  var labelsFor = function (canvas, most) {
    return Math.max(2, Math.min(most, Math.floor(canvas.parentNode.clientWidth / 72)));
  };

  var mrrCanvas = document.getElementById("mrr-chart");
  if (mrrCanvas) {
    var ctx = mrrCanvas.getContext("2d");
    var fill = ctx.createLinearGradient(0, 0, 0, 260);
    fill.addColorStop(0, "rgba(79, 70, 229, 0.22)");
    fill.addColorStop(1, "rgba(79, 70, 229, 0)");
    new Chart(mrrCanvas, {
      type: "line",
      data: {
        labels: data.mrr.labels.map(shortDate),
        datasets: [{ label: "MRR", data: data.mrr.values.map(Number), borderColor: accent, backgroundColor: fill,
                     fill: true, tension: 0.3, pointRadius: 0, pointHoverRadius: 4, borderWidth: 2 }]
      },
      options: {
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { display: false },
                   tooltip: { callbacks: { label: function (c) { return " MRR " + money.format(c.parsed.y); } } } },
        scales: {
          x: { grid: { display: false }, ticks: { maxTicksLimit: labelsFor(mrrCanvas, 7), maxRotation: 0, autoSkipPadding: 12 } },
          y: { beginAtZero: true, grid: { color: grid }, border: { display: false },
               ticks: { callback: function (v) { return money.format(v); }, maxTicksLimit: 5 } }
        }
      }
    });
  }

  var activityCanvas = document.getElementById("activity-chart");
  if (activityCanvas) {
    new Chart(activityCanvas, {
      type: "bar",
      data: {
        labels: data.activity.labels.map(shortDate),
        datasets: [
          { label: "Sign-ups", data: data.activity.signups, backgroundColor: "rgba(56, 189, 248, 0.75)", borderRadius: 3,
            maxBarThickness: 14 },
          { label: "Conversions", data: data.activity.conversions, backgroundColor: accent, borderRadius: 3,
            maxBarThickness: 14 }
        ]
      },
      options: {
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 10, boxHeight: 10, usePointStyle: true } } },
        scales: {
          x: { stacked: false, grid: { display: false },
               ticks: { maxTicksLimit: labelsFor(activityCanvas, 6), maxRotation: 0, autoSkipPadding: 12 } },
          y: { beginAtZero: true, grid: { color: grid }, border: { display: false }, ticks: { precision: 0, maxTicksLimit: 5 } }
        }
      }
    });
  }
}());
