// Availability SLIs as recording rules. Rendered, with the SLO alerts (alerts/slo.libsonnet), into
// alerts/slo.rules.yml.
//
// Wire SLI: the fraction of observed time a VRID had exactly one master, from ka-exporter's failover
// accounts (keepalived_wire_masterless_seconds_total, _multi_master_seconds_total, _observed_seconds_total).
// Time the exporter was not listening is not in `observed`, so it never burns the budget. The WORST view
// of all exporters (both nodes, an observer) counts, per (cluster, family, vrid).
//
// L2 SLI (where the L2 witness runs, --collector.l2): the fraction of observed time a VIP had exactly one
// host answering ARP/ND for it, from the witness's time accounts (keepalived_l2_vip_no_answerer_seconds_total,
// _multi_answerer_seconds_total, _observed_seconds_total), worst view per (cluster, family, vip). Counters,
// not the keepalived_l2_vip_answerers gauge: a 3.6 s crash failover under one 15 s scrape would be a whole
// bad sample (1 in 240 an hour, a burn rate of 41.7), so a gauge average would page on every unlucky
// failover. Time the witness could not tell (its start, probes failing, capture gaps) is not in `observed`
// (keepalived_l2_vip_unobserved_seconds_total), so it never burns the budget, as on the wire.
local u = import '../lib/utils.libsonnet';

// The SLI's error ratio over each window, the availability over 30 days and the 30-day error budget left
// (1: none spent, 0: all spent, negative: overspent), from a subsystem's time counters: `bad` (the
// counters of bad seconds), `observed` (the seconds accounted), worst view `by` the given labels.
local sli(config, name, by, bad, observed) = [
  {
    record: 'keepalived:%s_error:ratio_rate%s' % [name, w],
    expr: |||
      max by (%%(clusterLabel)s, %(by)s) (
        (%(bad)s)
        / (rate(%(observed)s{%%(kaSelector)s}[%(w)s]) > 0)
      )
    ||| % {
      by: by,
      w: w,
      observed: observed,
      bad: std.join(' + ', ['rate(%s{%%(kaSelector)s}[%s])' % [b, w] for b in bad]),
    },
  }
  for w in config.sloWindows
] + [
  {
    record: 'keepalived:%s_availability:ratio_rate30d' % name,
    expr: '1 - keepalived:%s_error:ratio_rate30d' % name,
  },
  {
    record: 'keepalived:%s_error_budget_remaining:ratio30d' % name,
    expr: '1 - keepalived:%s_error:ratio_rate30d / %%(sloErrorBudget)s' % name,
  },
];

{
  _config+:: {
    // The windows of the burn-rate alerts (SRE workbook: 5m/1h and 30m/6h) and the SLO's own (30d).
    sloWindows: ['5m', '30m', '1h', '6h', '30d'],
  },

  prometheusRules+:: {
    groups+: [
      {
        name: 'keepalived.slo.rules',
        rules: u.rules(
          $._config,
          sli(
            $._config,
            'wire',
            'family, vrid',
            ['keepalived_wire_masterless_seconds_total', 'keepalived_wire_multi_master_seconds_total'],
            'keepalived_wire_observed_seconds_total',
          ) + sli(
            $._config,
            'l2_vip',
            'family, vip',
            ['keepalived_l2_vip_no_answerer_seconds_total', 'keepalived_l2_vip_multi_answerer_seconds_total'],
            'keepalived_l2_vip_observed_seconds_total',
          )
        ),
      },
    ],
  },
}
