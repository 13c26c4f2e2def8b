// ka-exporter's monitoring mixin (https://monitoring.mixins.dev conventions): alerts, recording rules
// and the Grafana dashboard for keepalived / VRRP as ka-exporter exports it.
//
//   local kaMixin = (import 'mixin.libsonnet') + { _config+:: { kaSelector: 'job="keepalived"' } };
//   kaMixin.prometheusAlerts     // { groups: [...] }  alerting rules
//   kaMixin.prometheusRules      // { groups: [...] }  recording rules (the availability SLIs)
//   kaMixin.grafanaDashboards    // { 'ka-exporter.json': {...} }
//
// Settings: config.libsonnet. This repository's alerts/*.rules.yml and grafana/ka-exporter.json are this
// mixin rendered with the defaults (render.jsonnet; `python -m ka_exporter.devtools.mixin`).
(import 'config.libsonnet')
+ (import 'alerts/keepalived.libsonnet')
+ (import 'alerts/lvs.libsonnet')
+ (import 'rules/slo.libsonnet')
+ (import 'alerts/slo.libsonnet')
+ (import 'dashboards/ka-exporter.libsonnet')
