// A small Grafana dashboard builder (no grafonnet needed): panels as plain objects, laid out in rows of a
// 24-column grid. Follows the Grafana dashboard-linter rules tests/test_dashboard.py enforces.
{
  datasource:: { type: 'prometheus', uid: '${datasource}' },

  target(expr, legend, extra={}):: { expr: expr, legend: legend, extra: extra },

  mappings(values)::
    if std.length(values) == 0 then []
    else [{
      type: 'value',
      options: {
        [std.toString(values[i][0])]: { text: values[i][1], color: values[i][2], index: i }
        for i in std.range(0, std.length(values) - 1)
      },
    }],

  // kind: stat, timeseries, state-timeline, heatmap. opts: mappings [[value, text, color]], thresholds
  // [[value or null, color]], options, custom, min, max, defaults (extra fieldConfig defaults).
  panel(kind, title, description, unit, targets, width, height, opts={}):: {
    kind: kind,
    title: title,
    description: description,
    unit: unit,
    targets: targets,
    width: width,
    height: height,
    mappings: std.get(opts, 'mappings', []),
    thresholds: std.get(opts, 'thresholds', [[null, 'green']]),
    options: std.get(opts, 'options', {}),
    custom: std.get(opts, 'custom', {}),
    defaults: std.get(opts, 'defaults', {}),
    [if std.objectHas(opts, 'min') then 'min']: opts.min,
    [if std.objectHas(opts, 'max') then 'max']: opts.max,
  },

  row(title, panels):: { title: title, panels: panels },

  panelJson(p, id, x, y, sel)::
    local defaults =
      {
        unit: p.unit,
        mappings: $.mappings(p.mappings),
        thresholds: { mode: 'absolute', steps: [{ color: t[1], value: t[0] } for t in p.thresholds] },
        color:
          if std.length(p.mappings) > 0 && p.kind == 'state-timeline' then { mode: 'fixed', fixedColor: 'transparent' }
          else { mode: if p.kind == 'stat' then 'thresholds' else 'palette-classic' },
      }
      + (if std.objectHas(p, 'min') then { min: p.min } else {})
      + (if std.objectHas(p, 'max') then { max: p.max } else {})
      + (if p.kind == 'timeseries' then {
           custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: 10, showPoints: 'never' } + p.custom,
         } else if p.kind == 'heatmap' then { custom: p.custom } else {})
      + p.defaults;
    local options =
      (if p.kind == 'stat' then {
         reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
         colorMode: 'background',
         graphMode: 'none',
         textMode: 'value_and_name',
         justifyMode: 'auto',
         orientation: 'auto',
       } else {
         legend: { displayMode: 'list', placement: 'bottom', showLegend: true },
         tooltip: { mode: 'multi', sort: 'none' },
       }) + p.options;
    {
      id: id,
      type: p.kind,
      title: p.title,
      description: p.description,
      datasource: $.datasource,
      gridPos: { h: p.height, w: p.width, x: x, y: y },
      fieldConfig: { defaults: defaults, overrides: [] },
      options: options,
      targets: [
        {
          datasource: $.datasource,
          refId: std.char(std.codepoint('A') + i),
          expr: p.targets[i].expr % sel,
          legendFormat: p.targets[i].legend,
          range: true,
          instant: false,
          editorMode: 'code',
        } + p.targets[i].extra
        for i in std.range(0, std.length(p.targets) - 1)
      ],
    },

  // Rows of panels -> Grafana's flat panel list: ids from 1, each row a header then its panels left to
  // right, wrapping to a new line when the next panel does not fit in 24 columns.
  layout(rows, sel)::
    local step(acc, row) =
      local header = {
        id: acc.id,
        type: 'row',
        title: row.title,
        collapsed: false,
        gridPos: { h: 1, w: 24, x: 0, y: acc.y },
        panels: [],
      };
      local place(s, p) =
        local wrap = s.x + p.width > 24;
        local x = if wrap then 0 else s.x;
        local y = if wrap then s.y + s.line else s.y;
        local line = if wrap then 0 else s.line;
        {
          id: s.id + 1,
          x: x + p.width,
          y: y,
          line: std.max(line, p.height),
          out: s.out + [$.panelJson(p, s.id, x, y, sel)],
        };
      local placed = std.foldl(place, row.panels, { id: acc.id + 1, x: 0, y: acc.y + 1, line: 0, out: [] });
      { id: placed.id, y: placed.y + placed.line, out: acc.out + [header] + placed.out };
    std.foldl(step, rows, { id: 1, y: 0, out: [] }).out,

  variable(name, label, query):: {
    name: name,
    label: label,
    type: 'query',
    datasource: $.datasource,
    query: query,
    definition: query,
    refresh: 2,  // on time range change
    multi: true,
    includeAll: true,
    allValue: '.+',
    current: { selected: true, text: ['All'], value: ['$__all'] },
    options: [],
    regex: '',
    sort: if name == 'vrid' then 3 else 1,
    hide: 0,
  },
}
