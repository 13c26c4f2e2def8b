// Helpers shared by the mixin's alerts, rules and dashboards.
{
  // PromQL from a template: every %(name)s is filled from the config. Selectors are written
  // `metric{%(kaSelector)s}` or `metric{a="b",%(kaSelector)s}`; with an empty kaSelector no `{}` or
  // trailing comma is left behind, so the default config renders plain `metric`.
  promql(cfg, template):: std.strReplace(std.strReplace(template % cfg, ',}', '}'), '{}', ''),

  // A folded paragraph (YAML's `>-`): the lines of a text block joined by single spaces.
  fold(text):: std.join(' ', std.split(std.rstripChars(text, '\n'), '\n')),

  // Rules with their `expr` filled in, and `$labels.cluster` in annotations renamed to the cluster label.
  rules(cfg, rules):: [
    r {
      expr: $.promql(cfg, r.expr),
      [if std.objectHas(r, 'annotations') then 'annotations']: {
        [k]: std.strReplace(r.annotations[k], '$labels.cluster', '$labels.' + cfg.clusterLabel)
        for k in std.objectFields(r.annotations)
      },
    }
    for r in rules
  ],

  // The decimal text of n / 10^scale for an integer n >= 0 (exact: 10000, 8 -> "0.0001").
  decimal(n, scale)::
    local digits = std.toString(n);
    local padded = std.repeat('0', std.max(0, scale + 1 - std.length(digits))) + digits;
    local whole = std.substr(padded, 0, std.length(padded) - scale);
    local frac = std.rstripChars(std.substr(padded, std.length(padded) - scale, scale), '0');
    if frac == '' then whole else whole + '.' + frac,
}
