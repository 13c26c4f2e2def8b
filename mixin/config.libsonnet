// The mixin's settings. Override any of them when you import it, e.g.
//   (import 'ka-exporter/mixin.libsonnet') + { _config+:: { kaSelector: 'job="keepalived"', sloObjectivePercent: 99.95 } }
local u = import 'lib/utils.libsonnet';

{
  _config+:: {
    // Label matchers put into every selector of ka-exporter's series (alerts, rules, dashboard), e.g.
    // 'job="keepalived"'. Empty: every series of those names, whatever job scrapes them.
    kaSelector: '',

    // The target label that tells keepalived clusters apart (set it in your scrape config: the same value
    // on every node of one cluster). Rules that compare nodes group by it.
    clusterLabel: 'cluster',

    // The availability objective of every VRID (and, with the L2 witness, every VIP), in percent:
    // 99.99 is "four nines", 52.6 minutes a year. Steps of 0.000001 percent.
    sloObjectivePercent: 99.99,

    // The SLO's window: the error budget left is shown over it.
    sloWindow: '30d',

    // Derived: the error budget as a fraction (1 - objective), written exactly ("0.0001").
    sloErrorBudget: u.decimal(std.floor((100 - self.sloObjectivePercent) * 1000000 + 0.5), 8),

    // The objective as text for annotations and panel titles ("99.99").
    sloObjectiveText: u.decimal(std.floor(self.sloObjectivePercent * 1000000 + 0.5), 6),

    // The dashboard's identity in Grafana.
    dashboardUid: 'ka-exporter',
    dashboardTitle: 'keepalived / VRRP (ka-exporter)',
    dashboardTags: ['keepalived', 'vrrp', 'ka-exporter'],
  },
}
