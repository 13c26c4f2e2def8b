// Availability SLIs as recording rules. Rendered, with the SLO alerts (alerts/slo.libsonnet), into
// alerts/slo.rules.yml.
//
// Wire SLI: the fraction of observed time a VRID had exactly one master, from ka-exporter's failover
// accounts (keepalived_wire_masterless_seconds_total, _multi_master_seconds_total, _observed_seconds_total).
// Time the exporter was not listening is not in `observed`, so it never burns the budget. The WORST view
// of all exporters (both nodes, an observer) counts, per (cluster, family, vrid).
//
// L2 SLI (where the L2 witness runs, --collector.l2): the fraction of time a VIP had exactly one host
// answering ARP/ND for it (keepalived_l2_vip_answerers == 1 and no probe answered twice), worst view per
// (cluster, family, vip). It is a gauge sampled at each rule evaluation, so it is recorded first
// (keepalived:l2_vip_one_answerer:min) and averaged over the windows; time without the witness has no
// samples, and is unknown time rather than downtime, as on the wire.
local u = import '../lib/utils.libsonnet';

{
  _config+:: {
    // The windows of the burn-rate alerts (SRE workbook: 5m/1h and 30m/6h) and the SLO's own (30d).
    sloWindows: ['5m', '30m', '1h', '6h', '30d'],
  },

  prometheusRules+:: {
    groups+: [
      {
        name: 'keepalived.slo.rules',
        rules: u.rules($._config, [
          {
            record: 'keepalived:wire_error:ratio_rate' + w,
            expr: |||
              max by (%%(clusterLabel)s, family, vrid) (
                (rate(keepalived_wire_masterless_seconds_total{%%(kaSelector)s}[%(w)s]) + rate(keepalived_wire_multi_master_seconds_total{%%(kaSelector)s}[%(w)s]))
                / (rate(keepalived_wire_observed_seconds_total{%%(kaSelector)s}[%(w)s]) > 0)
              )
            ||| % { w: w },
          }
          for w in $._config.sloWindows
        ] + [
          // The SLI over the SLO's 30-day window, and the share of the 30-day error budget still left (1: none
          // spent, 0: all spent, negative: overspent).
          {
            record: 'keepalived:wire_availability:ratio_rate30d',
            expr: '1 - keepalived:wire_error:ratio_rate30d',
          },
          {
            record: 'keepalived:wire_error_budget_remaining:ratio30d',
            expr: '1 - keepalived:wire_error:ratio_rate30d / %(sloErrorBudget)s',
          },
          // L2: 1 while every exporter that probes the VIP sees exactly one answerer, 0 otherwise.
          {
            record: 'keepalived:l2_vip_one_answerer:min',
            expr: |||
              min by (%(clusterLabel)s, family, vip) (
                (keepalived_l2_vip_answerers{%(kaSelector)s} == bool 1) * (1 - keepalived_l2_vip_two_answerers{%(kaSelector)s})
              )
            |||,
          },
        ] + [
          {
            record: 'keepalived:l2_vip_error:ratio_avg' + w,
            expr: '1 - avg_over_time(keepalived:l2_vip_one_answerer:min[%s])' % w,
          }
          for w in $._config.sloWindows
        ] + [
          {
            record: 'keepalived:l2_vip_availability:ratio_avg30d',
            expr: '1 - keepalived:l2_vip_error:ratio_avg30d',
          },
          {
            record: 'keepalived:l2_vip_error_budget_remaining:ratio30d',
            expr: '1 - keepalived:l2_vip_error:ratio_avg30d / %(sloErrorBudget)s',
          },
        ]),
      },
    ],
  },
}
