// The files this repository ships, rendered from the mixin with its default _config:
//   jsonnet -S -m . mixin/render.jsonnet      (what `python -m ka_exporter.devtools.mixin` runs)
// Each rule file gets the groups named below and a header saying where it comes from.
local mixin = import 'mixin.libsonnet';

local groups = std.flattenArrays([mixin.prometheusRules.groups, mixin.prometheusAlerts.groups]);
local group(name) =
  local found = [g for g in groups if g.name == name];
  assert std.length(found) == 1 : 'no single group ' + name;
  found[0];

local yaml(header, names) =
  header + '\n' + |||
    #
    # Rendered from mixin/ (https://monitoring.mixins.dev conventions) with its default _config: edit the
    # mixin and run `python -m ka_exporter.devtools.mixin`, not this file (tests/test_mixin.py checks it).
  ||| + std.manifestYamlDoc({ groups: [group(n) for n in names] }, indent_array_in_object=true, quote_keys=false) + '\n';

{
  'alerts/keepalived.rules.yml': yaml(importstr 'alerts/keepalived.header', ['keepalived.rules']),
  'alerts/lvs.rules.yml': yaml(importstr 'alerts/lvs.header', ['keepalived-lvs']),
  'alerts/slo.rules.yml': yaml(importstr 'alerts/slo.header', ['keepalived.slo.rules', 'keepalived.slo.alerts']),
} + {
  ['grafana/' + name]: std.manifestJsonEx(mixin.grafanaDashboards[name], '  ') + '\n'
  for name in std.objectFields(mixin.grafanaDashboards)
}
