// The Grafana dashboard: grafanaDashboards['ka-exporter.json'], rendered into grafana/ka-exporter.json.
// One templated Prometheus data source; job, instance and vrid variables; every panel query filtered by
// them (and by _config.kaSelector); counters only through rate/increase.
local d = import '../lib/dashboard.libsonnet';
local u = import '../lib/utils.libsonnet';
local panel = d.panel, target = d.target, row = d.row;

{
  grafanaDashboards+:: {
    'ka-exporter.json':
      local cfg = $._config;
      local filters(extra) = std.join(',', [s for s in [cfg.kaSelector] + extra if s != '']);
      local sel = {
        sel: filters(['job=~"$job"', 'instance=~"$instance"']),
        selVrid: filters(['job=~"$job"', 'instance=~"$instance"', 'vrid=~"$vrid"']),
        clusterLabel: cfg.clusterLabel,
        budget: cfg.sloErrorBudget,
        window: cfg.sloWindow,
      };
      local objective = std.parseJson(u.decimal(std.floor(cfg.sloObjectivePercent * 1000000 + 0.5), 8));
      // An SLI's error ratio over a range, worst exporter's view `by` the given labels, from its bad
      // seconds counters over its observed seconds (selector `s`: selVrid for the wire, sel for L2).
      local sliError(range, by, bad, observed, s) = |||
        max by (%%(clusterLabel)s, %(by)s) (
          (%(bad)s)
          / (increase(%(observed)s{%%(%(s)s)s}[%(r)s]) > 0)
        )
      ||| % {
        r: range,
        by: by,
        s: s,
        observed: observed,
        bad: std.join('\n   + ', ['increase(%s{%%(%s)s}[%s])' % [b, s, range] for b in bad]),
      };
      // The wire SLI: no master, or more than one.
      local errorRatio(range) = sliError(
        range, 'family, vrid',
        ['keepalived_wire_masterless_seconds_total', 'keepalived_wire_multi_master_seconds_total'],
        'keepalived_wire_observed_seconds_total', 'selVrid'
      );
      // The L2 SLI: nobody, or more than one host, answering ARP/ND for the VIP.
      local l2ErrorRatio(range) = sliError(
        range, 'family, vip',
        ['keepalived_l2_vip_no_answerer_seconds_total', 'keepalived_l2_vip_multi_answerer_seconds_total'],
        'keepalived_l2_vip_observed_seconds_total', 'sel'
      );
      local slo = row('Availability and failovers (wire)', [
        panel('stat', 'Availability vs the %s%% objective (time range)' % cfg.sloObjectiveText,
              'Per VRID: the fraction of the dashboard\'s time range with exactly one master on the wire, from '
              + 'ka-exporter\'s failover accounts (keepalived_wire_masterless_seconds_total, '
              + '_multi_master_seconds_total over _observed_seconds_total; the worst exporter\'s view). Time the '
              + 'exporter was not listening is not counted. Red below the objective.',
              'percentunit', [target('1 - ' + errorRatio('$__range'), 'VRID {{vrid}} ({{family}})')], 8, 5,
              { thresholds: [[null, 'red'], [objective, 'green']], defaults: { decimals: 4 } }),
        panel('stat', 'Error budget left (%s)' % cfg.sloWindow,
              'Per VRID: the share of the %s error budget of a %s%% objective still left (1: none spent, 0: all '
              % [cfg.sloWindow, cfg.sloObjectiveText]
              + 'spent, below 0: overspent): 1 - error ratio / %s. The burn-rate alerts (alerts/slo.rules.yml) page '
              % cfg.sloErrorBudget
              + 'when it goes fast.',
              'percentunit', [target('1 - ' + errorRatio('%(window)s') + ' / %(budget)s', 'VRID {{vrid}} ({{family}})')], 8, 5,
              { thresholds: [[null, 'red'], [0.25, 'yellow'], [0.5, 'green']], defaults: { decimals: 1 } }),
        panel('stat', 'Master changes (time range)',
              'Per VRID: how often a router other than the last master became the only one on the wire '
              + '(keepalived_wire_master_changes_total; the exporter that saw the most).',
              'short', [target('max by (%(clusterLabel)s, family, vrid) (increase(keepalived_wire_master_changes_total{%(selVrid)s}[$__range]))', 'VRID {{vrid}} ({{family}})')], 8, 5,
              { thresholds: [[null, 'green']], defaults: { decimals: 0 } }),
        panel('heatmap', 'Failover gap: masterless time per master change',
              'How long each master change left the VRID without a master on the wire: the old master\'s last '
              + '(or priority-0) advert to the new master\'s first (keepalived_wire_failover_gap_seconds, '
              + '10 ms to 30 s buckets). A graceful stop hands over within the skew time (< advert_int); a crash '
              + 'takes the master-down interval (3 x advert_int + skew).',
              's', [target('sum by (le) (max by (le, %(clusterLabel)s, family, vrid) (increase(keepalived_wire_failover_gap_seconds_bucket{%(selVrid)s}[$__rate_interval])))', '{{le}}', { format: 'heatmap' })], 12, 8,
              {
                options: {
                  calculate: false,
                  cellGap: 1,
                  color: { mode: 'scheme', scheme: 'Oranges', exponent: 0.5, fill: 'dark-orange', reverse: false, steps: 64 },
                  yAxis: { axisPlacement: 'left', unit: 's' },
                  rowsFrame: { layout: 'auto' },
                  filterValues: { le: 1e-9 },
                  cellValues: { unit: 'short' },
                },
                custom: { hideFrom: { legend: false, tooltip: false, viz: false }, scaleDistribution: { type: 'linear' } },
              }),
        panel('timeseries', 'Time without one master (wire)',
              'Share of each interval a VRID had no master (keepalived_wire_masterless_seconds_total) or more '
              + 'than one (keepalived_wire_multi_master_seconds_total), worst exporter\'s view: a failover shows '
              + 'as a short spike; a split brain as a plateau of multi-master.',
              'percentunit', [
                target('max by (%(clusterLabel)s, family, vrid) (rate(keepalived_wire_masterless_seconds_total{%(selVrid)s}[$__rate_interval]))', 'no master VRID {{vrid}} ({{family}})'),
                target('max by (%(clusterLabel)s, family, vrid) (rate(keepalived_wire_multi_master_seconds_total{%(selVrid)s}[$__rate_interval]))', 'several masters VRID {{vrid}} ({{family}})'),
              ], 12, 8, { min: 0 }),
        panel('state-timeline', 'Master on the wire, per VRID',
              'Who was master when: each router advertising a VRID with a priority above 0 within 3 advert '
              + 'intervals, as the exporters hear it (keepalived_wire_last_advert_timestamp_seconds, '
              + 'keepalived_wire_advert_interval_seconds, keepalived_wire_advert_priority). One row green at a '
              + 'time is healthy; two at once a split brain (or a preemption overlap); none a gap.',
              'none', [target(|||
                max by (%(clusterLabel)s, family, vrid, source) (
                  ((time() - keepalived_wire_last_advert_timestamp_seconds{%(selVrid)s}) < bool (3 * keepalived_wire_advert_interval_seconds{%(selVrid)s}))
                  * (keepalived_wire_advert_priority{%(selVrid)s} > bool 0)
                )
              |||, 'VRID {{vrid}}: {{source}}')], 24, 8,
              {
                mappings: [[0, 'not master', 'transparent'], [1, 'MASTER', 'green']],
                options: { mergeValues: true, showValue: 'never', rowHeight: 0.9 },
              }),
      ]);
      local l2 = row('Availability at L2 (ARP/ND answerers)', [
        panel('stat', 'L2 availability vs the %s%% objective (time range)' % cfg.sloObjectiveText,
              'Per VIP, where the L2 witness runs (--collector.l2): the fraction of the time range with exactly '
              + 'one host answering ARP/ND for the VIP, what clients on the segment live through, from the '
              + 'witness\'s time accounts (keepalived_l2_vip_no_answerer_seconds_total, _multi_answerer_seconds_total '
              + 'over _observed_seconds_total; the worst exporter\'s view). Time the witness could not tell '
              + '(_unobserved_seconds_total) is not counted. Red below the objective.',
              'percentunit', [target('1 - ' + l2ErrorRatio('$__range'), 'VIP {{vip}} ({{family}})')], 8, 5,
              { thresholds: [[null, 'red'], [objective, 'green']], defaults: { decimals: 4 } }),
        panel('stat', 'L2 error budget left (%s)' % cfg.sloWindow,
              'Per VIP: the share of the %s error budget of a %s%% objective still left at L2 (1: none spent, '
              % [cfg.sloWindow, cfg.sloObjectiveText]
              + '0: all spent, below 0: overspent): 1 - error ratio / %s. KeepalivedVIPAvailabilityBudgetBurn '
              % cfg.sloErrorBudget
              + '(alerts/slo.rules.yml) pages when it goes fast.',
              'percentunit', [target('1 - ' + l2ErrorRatio('%(window)s') + ' / %(budget)s', 'VIP {{vip}} ({{family}})')], 8, 5,
              { thresholds: [[null, 'red'], [0.25, 'yellow'], [0.5, 'green']], defaults: { decimals: 1 } }),
        panel('stat', 'Seconds without one answerer (time range)',
              'Per VIP: seconds of the time range with nobody answering ARP/ND for it '
              + '(keepalived_l2_vip_no_answerer_seconds_total) and with two or more hosts answering '
              + '(keepalived_l2_vip_multi_answerer_seconds_total), worst exporter\'s view. A graceful failover '
              + 'costs a fraction of a second, a crash the master-down interval.',
              's', [
                target('max by (%(clusterLabel)s, family, vip) (increase(keepalived_l2_vip_no_answerer_seconds_total{%(sel)s}[$__range]))', 'no answerer {{vip}}'),
                target('max by (%(clusterLabel)s, family, vip) (increase(keepalived_l2_vip_multi_answerer_seconds_total{%(sel)s}[$__range]))', 'several answerers {{vip}}'),
              ], 8, 5,
              { thresholds: [[null, 'green'], [1, 'yellow']], defaults: { decimals: 1 } }),
        panel('timeseries', 'Time without one answerer (L2)',
              'Share of each interval a VIP had nobody answering ARP/ND for it (keepalived_l2_vip_no_answerer_seconds_total) '
              + 'or more than one host (keepalived_l2_vip_multi_answerer_seconds_total), and the share the witness '
              + 'could not tell (keepalived_l2_vip_unobserved_seconds_total: its restarts, probes not completing), '
              + 'worst exporter\'s view.',
              'percentunit', [
                target('max by (%(clusterLabel)s, family, vip) (rate(keepalived_l2_vip_no_answerer_seconds_total{%(sel)s}[$__rate_interval]))', 'no answerer {{vip}} ({{family}})'),
                target('max by (%(clusterLabel)s, family, vip) (rate(keepalived_l2_vip_multi_answerer_seconds_total{%(sel)s}[$__rate_interval]))', 'several answerers {{vip}} ({{family}})'),
                target('max by (%(clusterLabel)s, family, vip) (rate(keepalived_l2_vip_unobserved_seconds_total{%(sel)s}[$__rate_interval]))', 'unobserved {{vip}} ({{family}})'),
              ], 24, 8, { min: 0 }),
      ]);
      local rowsAfterStatus = [
    row("Status", [
      panel("stat", "Split brain",
            "Per VRID: 1 when any exporter's fused verdict sees two holders (keepalived_split_brain): wire adverts, a node holding the VIPs while another router is master, a silent local master, or two ARP/ND answerers. Failover and preemption overlaps do not count.",
            "none", [target("max by (vrid) (keepalived_split_brain{%(selVrid)s})", "VRID {{vrid}}")], 6, 4, {"mappings": [[0, "OK", "green"], [1, "SPLIT BRAIN", "red"]], "thresholds": [[null, "green"], [1, "red"]]}),
      panel("stat", "No master (wire)",
            "Per VRID: 1 when a VRID that is configured (or was seen) has no router advertising it (keepalived_wire_no_master).",
            "none", [target("max by (vrid) (keepalived_wire_no_master{%(selVrid)s})", "VRID {{vrid}}")], 6, 4, {"mappings": [[0, "OK", "green"], [1, "NO MASTER", "red"]], "thresholds": [[null, "green"], [1, "red"]]}),
      panel("stat", "Nodes holding each VIP",
            "How many nodes hold each configured VIP right now (sum of keepalived_vip_status): 1 is right, 0 means nobody serves it, 2 or more is a split brain or a VIP left behind.",
            "none", [target("sum by (vip) (keepalived_vip_status{%(sel)s})", "{{vip}}")], 6, 4, {"thresholds": [[null, "red"], [1, "green"], [2, "red"]]}),
      panel("stat", "keepalived running",
            "Per node: is keepalived's parent process running (keepalived_up)?",
            "none", [target("keepalived_up{%(sel)s}", "{{instance}}")], 6, 4, {"mappings": [[0, "DOWN", "red"], [1, "UP", "green"]], "thresholds": [[null, "red"], [1, "green"]]}),
    ]),
    row("VRRP state", [
      panel("state-timeline", "Who is master, per VRID",
            "keepalived's state of every VRRP instance on every node over time (keepalived_vrrp_state): exactly one MASTER per VRID is healthy; two at once is a split brain.",
            "none", [target("keepalived_vrrp_state{%(selVrid)s}", "VRID {{vrid}} {{iname}} on {{instance}}")], 24, 8, {"mappings": [[0, "INIT", "blue"], [1, "BACKUP", "yellow"], [2, "MASTER", "green"], [3, "FAULT", "red"], [4, "STOP", "purple"]], "options": {"mergeValues": true, "showValue": "auto", "rowHeight": 0.9}}),
      panel("state-timeline", "VIP ownership per node",
            "Which node holds each configured VIP over time (keepalived_vip_status): a VIP held on two rows at once is a duplicate address.",
            "none", [target("keepalived_vip_status{%(sel)s}", "{{vip}} on {{hostname}} ({{instance}})")], 24, 8, {"mappings": [[0, "not held", "transparent"], [1, "held", "green"]], "options": {"mergeValues": true, "showValue": "never", "rowHeight": 0.9}}),
      panel("timeseries", "Priority: base vs effective",
            "Configured (base) priority and the effective priority after tracked scripts and interfaces (keepalived_vrrp_priority, keepalived_vrrp_effective_priority). Effective below base: a check is failing.",
            "none", [target("keepalived_vrrp_priority{%(selVrid)s}", "base {{iname}} on {{instance}}"), target("keepalived_vrrp_effective_priority{%(selVrid)s}", "effective {{iname}} on {{instance}}")], 12, 8, {"min": 0, "max": 255}),
      panel("timeseries", "State transitions",
            "VRRP state changes and times an instance became MASTER, per interval (keepalived_vrrp_transitions_total, keepalived_become_master_total).",
            "short", [target("sum by (instance, iname, vrid) (increase(keepalived_vrrp_transitions_total{%(selVrid)s}[$__rate_interval]))", "transitions {{iname}} on {{instance}}"), target("sum by (instance, iname, vrid) (increase(keepalived_become_master_total{%(selVrid)s}[$__rate_interval]))", "became master {{iname}} on {{instance}}")], 12, 8, {"custom": {"drawStyle": "bars", "fillOpacity": 80}, "min": 0}),
    ]),
    row("Wire (sniffed VRRP)", [
      panel("timeseries", "Advert rate per router (wire)",
            "VRRP adverts per second from each router, as sniffed by each exporter (keepalived_wire_adverts_total). A master sends one per advert_int; two routers sending on one VRID is a split brain.",
            "pps", [target("rate(keepalived_wire_adverts_total{%(selVrid)s}[$__rate_interval])", "{{source}} VRID {{vrid}} seen by {{instance}}")], 12, 8, {"min": 0}),
      panel("timeseries", "Advertised priority per router (wire)",
            "The priority each router puts in its adverts (keepalived_wire_advert_priority); 0 is a master resigning (graceful stop).",
            "none", [target("keepalived_wire_advert_priority{%(selVrid)s}", "{{source}} VRID {{vrid}} seen by {{instance}}")], 12, 8, {"min": 0, "max": 255}),
      panel("timeseries", "Masters per VRID (wire)",
            "How many routers advertise each VRID now (keepalived_wire_masters): 1 is healthy.",
            "none", [target("keepalived_wire_masters{%(selVrid)s}", "VRID {{vrid}} {{family}} on {{interface}} ({{instance}})")], 8, 8, {"custom": {"lineInterpolation": "stepAfter"}, "min": 0}),
      panel("state-timeline", "Conflicts and VIP mismatches",
            "Wire conflicts between routers of one VRID, by kind: vips, interval, version, auth, source (keepalived_wire_conflict); and instances whose VIPs disagree with their state (keepalived_vrrp_vip_mismatch).",
            "none", [target("keepalived_wire_conflict{%(selVrid)s}", "{{kind}} VRID {{vrid}} ({{instance}})"), target("keepalived_vrrp_vip_mismatch{%(selVrid)s}", "VIP mismatch {{iname}} on {{instance}}")], 8, 8, {"mappings": [[0, "ok", "green"], [1, "conflict", "red"]], "options": {"mergeValues": true, "showValue": "never", "rowHeight": 0.9}}),
      panel("timeseries", "Invalid and dropped packets (wire)",
            "VRRP packets the exporter rejected, by reason (keepalived_wire_invalid_packets_total), and packets the kernel dropped before the exporter read them (keepalived_wire_kernel_drops_total).",
            "pps", [target("sum by (instance, reason) (rate(keepalived_wire_invalid_packets_total{%(sel)s}[$__rate_interval]))", "{{reason}} ({{instance}})"), target("rate(keepalived_wire_kernel_drops_total{%(sel)s}[$__rate_interval])", "kernel drops ({{instance}})")], 8, 8, {"min": 0}),
      panel("state-timeline", "Split-brain witnesses",
            "Why each exporter calls a VRID split brain (keepalived_split_brain_witness): wire (adverts), address (it holds the VIPs while another router is master), liveness (its keepalived claims MASTER but is silent), l2 (two ARP/ND answerers); and local masters not heard advertising (keepalived_master_silent).",
            "none", [target("keepalived_split_brain_witness{%(selVrid)s}", "{{witness}} VRID {{vrid}} ({{instance}})"), target("keepalived_master_silent{%(selVrid)s}", "silent master VRID {{vrid}} ({{instance}})")], 16, 8, {"mappings": [[0, "no", "green"], [1, "yes", "red"]], "options": {"mergeValues": true, "showValue": "never", "rowHeight": 0.9}}),
      panel("stat", "Foreign masters / unanswered VIPs",
            "Per VRID: routers advertising it that are none of ours (keepalived_foreign_masters, known with unicast peers), and VIPs nobody answers ARP/ND for while a master advertises (keepalived_vips_unanswered, L2 witness). 0 is healthy.",
            "none", [target("max by (vrid) (keepalived_foreign_masters{%(selVrid)s})", "foreign VRID {{vrid}}"), target("max by (vrid) (keepalived_vips_unanswered{%(selVrid)s})", "unanswered VRID {{vrid}}")], 8, 8, {"thresholds": [[null, "green"], [1, "red"]]}),
    ]),
    row("Exporter", [
      panel("state-timeline", "Exporter source health",
            "Each ka-exporter source (wire, dbus, dumps, vips, process, config) per node: up, or failing with its last data kept (ka_exporter_source_up).",
            "none", [target("ka_exporter_source_up{%(sel)s}", "{{source}} on {{instance}}")], 12, 8, {"mappings": [[0, "failing", "red"], [1, "up", "green"]], "options": {"mergeValues": true, "showValue": "never", "rowHeight": 0.9}}),
      panel("timeseries", "Scrape duration",
            "Time ka-exporter took to render a scrape (ka_exporter_scrape_duration_seconds).",
            "s", [target("ka_exporter_scrape_duration_seconds{%(sel)s}", "{{instance}}")], 6, 8, {"min": 0}),
      panel("stat", "keepalived uptime",
            "Time since keepalived's parent process started on each node (keepalived_process_start_time_seconds).",
            "s", [target("time() - keepalived_process_start_time_seconds{%(sel)s}", "{{instance}}")], 6, 8),
    ]),
    row("LVS (virtual and real servers)", [
      panel("state-timeline", "Real servers (keepalived's health checkers)",
            "Per real server of each virtual server: alive or down as keepalived's checkers call it (keepalived_lvs_real_server_up).",
            "none", [target("keepalived_lvs_real_server_up{%(sel)s}", "{{real_server}} of {{virtual_server}} on {{instance}}")], 12, 8, {"mappings": [[0, "down", "red"], [1, "alive", "green"]], "options": {"mergeValues": true, "showValue": "never", "rowHeight": 0.9}}),
      panel("stat", "Alive real servers per virtual server",
            "Real servers keepalived calls alive, per virtual server (keepalived_lvs_virtual_server_real_servers_alive); red at 0.",
            "none", [target("keepalived_lvs_virtual_server_real_servers_alive{%(sel)s}", "{{virtual_server}} on {{instance}}")], 6, 8, {"thresholds": [[null, "red"], [1, "green"]]}),
      panel("timeseries", "New connections per virtual server (IPVS)",
            "Connections per second IPVS scheduled to each virtual server (rate of keepalived_ipvs_virtual_server_connections_total).",
            "cps", [target("sum by (instance, virtual_server) (rate(keepalived_ipvs_virtual_server_connections_total{%(sel)s}[$__rate_interval]))", "{{virtual_server}} on {{instance}}")], 6, 8, {"min": 0}),
    ]),

      ];
      local rows = [rowsAfterStatus[0], slo, l2] + rowsAfterStatus[1:];
      {
        id: null,
        uid: cfg.dashboardUid,
        title: cfg.dashboardTitle,
        description: 'keepalived (VRRP) seen by ka-exporter: who is master, split brain, VIP ownership, '
                     + 'priorities, adverts on the wire, and the exporter\'s own health.',
        tags: cfg.dashboardTags,
        editable: true,
        graphTooltip: 1,
        schemaVersion: 39,
        version: 1,
        time: { from: 'now-1h', to: 'now' },
        refresh: '30s',
        timezone: '',
        timepicker: {},
        fiscalYearStartMonth: 0,
        liveNow: false,
        links: [],
        annotations: {
          list: [
            {
              builtIn: 1,
              datasource: { type: 'grafana', uid: '-- Grafana --' },
              enable: true,
              hide: true,
              iconColor: 'rgba(0, 211, 255, 1)',
              name: 'Annotations & Alerts',
              type: 'dashboard',
            },
            {
              // A marker at every change of master on the wire (all VRIDs the variables select).
              datasource: d.datasource,
              enable: true,
              hide: false,
              iconColor: 'orange',
              name: 'Master changes (wire)',
              expr: 'max by (%(clusterLabel)s, family, vrid) (increase(keepalived_wire_master_changes_total{%(selVrid)s}[$__rate_interval])) > 0' % sel,
              step: '15s',
              titleFormat: 'Master change',
              textFormat: 'VRID {{vrid}} ({{family}}): a new master',
              tagKeys: 'vrid,family',
              useValueForTime: false,
            },
          ],
        },
        templating: {
          list: [
            {
              name: 'datasource',
              label: 'Data source',
              type: 'datasource',
              query: 'prometheus',
              current: {},
              hide: 0,
              includeAll: false,
              multi: false,
              options: [],
              refresh: 1,
              regex: '',
            },
            d.variable('job', 'Job', u.promql(cfg, 'label_values(ka_exporter_build_info{%(kaSelector)s}, job)')),
            d.variable('instance', 'Instance', 'label_values(ka_exporter_build_info{%s}, instance)' % filters(['job=~"$job"'])),
            d.variable('vrid', 'VRID', 'label_values({__name__=~"keepalived_vrrp_state|keepalived_wire_masters",%s}, vrid)' % sel.sel),
          ],
        },
        panels: d.layout(rows, sel),
      },
  },
}
