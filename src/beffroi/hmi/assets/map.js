/* Beffroi maps: the schematic background's style, vehicle markers, and commune labels that
 * never hide a marker.
 *
 * Labels: each commune's name is a non-interactive label on a pane below the markers (so a
 * marker is always drawn over it and stays clickable). After every change of view or of
 * markers, each label takes the first of a few places around its commune's centre whose box
 * touches no marker and no other label; with no such place it is hidden until one frees up.
 * Bigger communes are placed first. Zoomed far out the labels are hidden: they would cover the
 * whole map.
 */
(function () {
  var LABEL_MIN_ZOOM = 10;
  var MARGIN = 3; // px kept between a label and a marker
  var STEPS = [10, 24, 40, 58]; // px from the centre, tried in turn
  var DIRECTIONS = [
    [0, -1], [1, 0], [0, 1], [-1, 0], [1, -1], [-1, -1], [1, 1], [-1, 1]
  ]; // fmt: skip
  var FILLS = ["#eef0e6", "#e9ece3", "#f1eee4", "#e6ebe6"];
  var MARKERS = "path.beffroi-asset, .beffroi-cluster, .map-trail-end";

  function hash(text) {
    var h = 0;
    for (var i = 0; i < text.length; i++) h = (h * 31 + text.charCodeAt(i)) | 0;
    return Math.abs(h);
  }

  function schematicStyle(feature, context) {
    var h = (context && context.hideout) || {};
    var p = feature.properties || {};
    if (p.kind === "link") {
      return { color: "#b9a989", weight: 2, opacity: 0.7, dashArray: "5 6", fill: false };
    }
    return {
      color: "#8a96a3",
      weight: 1.2,
      opacity: 0.9,
      fillColor: FILLS[hash(p.id || "") % FILLS.length],
      fillOpacity: h.tiles ? 0 : 0.9,
    };
  }

  function escape(text) {
    var div = document.createElement("div");
    div.textContent = text;
    return div.innerHTML;
  }

  function overlaps(a, b) {
    return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  }

  function hits(rect, boxes) {
    for (var i = 0; i < boxes.length; i++) if (overlaps(rect, boxes[i])) return true;
    return false;
  }

  function place(map) {
    map._beffroiLabelPending = false;
    var box = map.getContainer();
    var labels = Array.prototype.slice.call(box.querySelectorAll(".map-commune-label"));
    var show = map.getZoom() >= LABEL_MIN_ZOOM;
    var obstacles = [];
    if (show) {
      var marks = box.querySelectorAll(MARKERS);
      for (var m = 0; m < marks.length; m++) {
        var r = marks[m].getBoundingClientRect();
        if (r.width || r.height) {
          obstacles.push({
            left: r.left - MARGIN, right: r.right + MARGIN,
            top: r.top - MARGIN, bottom: r.bottom + MARGIN,
          }); // fmt: skip
        }
      }
    }
    labels.sort(function (a, b) {
      return Number(a.dataset.rank || 0) - Number(b.dataset.rank || 0);
    });
    var placed = [];
    for (var k = 0; k < labels.length; k++) {
      var el = labels[k];
      var text = el.firstChild;
      if (!text) continue;
      var at = el.getBoundingClientRect(); // the label's anchor: its commune's centre
      var w = text.offsetWidth, h = text.offsetHeight;
      var found = null;
      var candidates = [[0, 0]];
      for (var s = 0; s < STEPS.length; s++) {
        for (var d = 0; d < DIRECTIONS.length; d++) {
          var u = DIRECTIONS[d];
          candidates.push([u[0] * (w / 2 + STEPS[s]), u[1] * (h / 2 + STEPS[s])]);
        }
      }
      for (var c = 0; show && c < candidates.length; c++) {
        var left = at.left - w / 2 + candidates[c][0];
        var top = at.top - h / 2 + candidates[c][1];
        var rect = { left: left, top: top, right: left + w, bottom: top + h };
        if (!hits(rect, obstacles) && !hits(rect, placed)) {
          found = candidates[c];
          placed.push(rect);
          break;
        }
      }
      if (found) {
        text.style.transform =
          "translate(" + (found[0] - w / 2) + "px," + (found[1] - h / 2) + "px)";
        el.classList.remove("map-label-hidden");
      } else {
        el.classList.add("map-label-hidden");
      }
    }
    box.dataset.labelPasses = String(Number(box.dataset.labelPasses || 0) + 1);
    box.dataset.labelPending = "0";
  }

  function schedule(map) {
    if (map._beffroiLabelPending) return;
    map._beffroiLabelPending = true;
    map.getContainer().dataset.labelPending = "1";
    // After the frame that draws the change: markers have their final boxes by then.
    setTimeout(function () {
      window.requestAnimationFrame(function () {
        place(map);
      });
    }, 30);
  }

  function watch(map) {
    if (map._beffroiLabels) return;
    map._beffroiLabels = true;
    map.on("zoomend moveend layeradd layerremove resize", function () {
      schedule(map);
    });
    // Vehicles move in place (no layer event): look again now and then, while the map lives.
    var timer = setInterval(function () {
      if (!document.body.contains(map.getContainer())) {
        clearInterval(timer);
        return;
      }
      schedule(map);
    }, 2000);
  }

  function communeLabel(feature, latlng, context) {
    var p = feature.properties || {};
    var marker = L.marker(latlng, {
      icon: L.divIcon({
        className: "map-commune-label",
        html: "<span>" + escape(p.name || "") + "</span>",
        iconSize: null,
      }),
      interactive: false,
      keyboard: false,
      pane: (context && context.hideout && context.hideout.pane) || "markerPane",
    });
    marker.on("add", function () {
      var el = marker.getElement();
      if (el) el.dataset.rank = String(p.rank || 0);
      if (context && context.map) {
        watch(context.map);
        schedule(context.map);
      }
    });
    return marker;
  }

  // A vehicle: the asset marker, bigger and ringed, its class in its tooltip.
  function vehicleMarker(feature, latlng, context) {
    var marker = window.dashExtensions.beffroi.assetMarker(feature, latlng, context);
    var p = feature.properties || {};
    marker.options.className += " beffroi-vehicle" + (p.f ? " beffroi-fleet" : "");
    marker.options.weight = 2;
    if (p.label) {
      marker.setTooltipContent(escape(p.id + " · " + p.label));
    }
    return marker;
  }

  window.dashExtensions = Object.assign({}, window.dashExtensions, {
    beffroiMap: {
      schematicStyle: schematicStyle,
      communeLabel: communeLabel,
      vehicleMarker: vehicleMarker,
    },
  });
})();
