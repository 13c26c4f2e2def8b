// SLO alerts: multi-window, multi-burn-rate (Google's SRE workbook, "Alerting on SLOs") on the wire SLI
// and the L2 SLI (exactly one ARP/ND answerer per VIP, where the L2 witness runs) of rules/slo.libsonnet,
// against _config.sloObjectivePercent (default 99.99%: an error budget of 0.0001):
//   page:   burn rate 14.4 over 1h AND over 5m (2% of a 30-day budget in one hour),
//   ticket: burn rate 6 over 6h AND over 30m (5% of the budget in six hours).
// A normal crash failover at advert_int 1 costs ~3.6 s: 0.1% of an hour, a burn rate of 10 over 1h, below
// the page threshold, while two crash failovers within an hour (7.2 s, 83% of a day's budget) do page.
// The L2 alerts read the witness's time counters, so the same holds for a VIP: a failover's few seconds
// without an answerer cost those seconds, not the whole scrape interval they fall in.
// Rendered into alerts/slo.rules.yml, after the recording rules.
local u = import '../lib/utils.libsonnet';

{
  prometheusAlerts+:: {
    groups+: [
      {
        name: 'keepalived.slo.alerts',
        rules: u.rules($._config, [
          {
            alert: 'KeepalivedAvailabilityBudgetBurn',
            expr: |||
              keepalived:wire_error:ratio_rate1h > (14.4 * %(sloErrorBudget)s)
              and keepalived:wire_error:ratio_rate5m > (14.4 * %(sloErrorBudget)s)
            |||,
            'for': '2m',
            labels: {
              severity: 'critical',
            },
            annotations: {
              summary: 'VRID {{ $labels.vrid }} is burning its availability budget fast.',
              description: u.fold(|||
                VRID {{ $labels.vrid }} ({{ $labels.family }}){{ if $labels.cluster }} in cluster
                {{ $labels.cluster }}{{ end }} has had no master, or more than one, for
                {{ $value | humanizePercentage }} of the last hour, and still does over the last 5 minutes: a
                burn rate above 14.4, at which a 30-day budget of a %(sloObjectiveText)s%% objective lasts less than about two
                days.
              ||| % $._config),
              runbook_url: 'docs/runbook.md#keepalivedavailabilitybudgetburn',
            },
          },
          {
            alert: 'KeepalivedAvailabilityBudgetBurnSlow',
            expr: |||
              keepalived:wire_error:ratio_rate6h > (6 * %(sloErrorBudget)s)
              and keepalived:wire_error:ratio_rate30m > (6 * %(sloErrorBudget)s)
            |||,
            'for': '15m',
            labels: {
              severity: 'warning',
            },
            annotations: {
              summary: 'VRID {{ $labels.vrid }} is spending its availability budget faster than it lasts.',
              description: u.fold(|||
                VRID {{ $labels.vrid }} ({{ $labels.family }}){{ if $labels.cluster }} in cluster
                {{ $labels.cluster }}{{ end }} has had no master, or more than one, for
                {{ $value | humanizePercentage }} of the last 6 hours: a burn rate above 6, at which a 30-day
                budget of a %(sloObjectiveText)s%% objective lasts less than five days. Frequent failovers (a flapping check
                script, an unstable link) are the usual cause.
              ||| % $._config),
              runbook_url: 'docs/runbook.md#keepalivedavailabilitybudgetburnslow',
            },
          },
          {
            alert: 'KeepalivedVIPAvailabilityBudgetBurn',
            expr: |||
              keepalived:l2_vip_error:ratio_rate1h > (14.4 * %(sloErrorBudget)s)
              and keepalived:l2_vip_error:ratio_rate5m > (14.4 * %(sloErrorBudget)s)
            |||,
            'for': '2m',
            labels: {
              severity: 'critical',
            },
            annotations: {
              summary: 'VIP {{ $labels.vip }} is burning its availability budget fast.',
              description: u.fold(|||
                VIP {{ $labels.vip }} ({{ $labels.family }}){{ if $labels.cluster }} in cluster
                {{ $labels.cluster }}{{ end }} has had no host, or more than one, answering ARP/ND for it for
                {{ $value | humanizePercentage }} of the last hour, and still does over the last 5 minutes: a
                burn rate above 14.4, at which a 30-day budget of a %(sloObjectiveText)s%% objective lasts less than about two
                days.
              ||| % $._config),
              runbook_url: 'docs/runbook.md#keepalivedvipavailabilitybudgetburn',
            },
          },
          {
            alert: 'KeepalivedVIPAvailabilityBudgetBurnSlow',
            expr: |||
              keepalived:l2_vip_error:ratio_rate6h > (6 * %(sloErrorBudget)s)
              and keepalived:l2_vip_error:ratio_rate30m > (6 * %(sloErrorBudget)s)
            |||,
            'for': '15m',
            labels: {
              severity: 'warning',
            },
            annotations: {
              summary: 'VIP {{ $labels.vip }} is spending its availability budget faster than it lasts.',
              description: u.fold(|||
                VIP {{ $labels.vip }} ({{ $labels.family }}){{ if $labels.cluster }} in cluster
                {{ $labels.cluster }}{{ end }} has had no host, or more than one, answering ARP/ND for it for
                {{ $value | humanizePercentage }} of the last 6 hours: a burn rate above 6, at which a 30-day
                budget of a %(sloObjectiveText)s%% objective lasts less than five days. Frequent failovers, or a
                VIP that two hosts keep answering for, are the usual cause.
              ||| % $._config),
              runbook_url: 'docs/runbook.md#keepalivedvipavailabilitybudgetburnslow',
            },
          },
        ]),
      },
    ],
  },
}
