// Alerts: keepalived, VRRP, the wire, the exporter itself. Rendered into alerts/keepalived.rules.yml (see mixin/render.jsonnet).
// Each rule's `expr` is a PromQL template filled from _config (utils.rules: %(kaSelector)s, %(clusterLabel)s).
local u = import '../lib/utils.libsonnet';

{
  prometheusAlerts+:: {
    groups+: [
      {
        name: 'keepalived.rules',
        rules: u.rules($._config, [
          // ---- process ---------------------------------------------------------------------------------
          // keepalived not running on a node whose keepalived.conf has VRRP instances (the join keeps an
          // observer-only exporter, which has no keepalived.conf, quiet). `systemctl restart keepalived` takes
          // well under a second and shows in at most one scrape; 1m (two scrapes at S<=30s) never sees it.
          {
            alert: "KeepalivedDown",
            expr: |||
              keepalived_up{%(kaSelector)s} == 0
              and on (job, instance) group by (job, instance) (keepalived_config_instance_info{%(kaSelector)s})
            |||,
            "for": "1m",
            labels: {
              severity: "critical",
            },
            annotations: {
              summary: "keepalived is not running on {{ $labels.instance }}.",
              description: u.fold(|||
                keepalived's parent process has not been running on {{ $labels.instance }} (job
                {{ $labels.job }}) for more than 1 minute although keepalived.conf configures VRRP instances
                there. This node cannot take over any VIP; if it was killed it may still hold its VIPs (see
                KeepalivedSplitBrainVIP).
              |||),
              runbook_url: "docs/runbook.md#keepaliveddown",
            },
          },
          // A restart shows as a new parent start time, or as the exporter's own restart counter. Informational:
          // a planned restart fires it too, and it resolves by itself 15 minutes later.
          {
            alert: "KeepalivedRestarted",
            expr: |||
              (increase(keepalived_process_restarts_total{%(kaSelector)s}[15m]) > 0)
              or
              (changes(keepalived_process_start_time_seconds{%(kaSelector)s}[15m]) > 0)
            |||,
            labels: {
              severity: "info",
            },
            annotations: {
              summary: "keepalived restarted on {{ $labels.instance }}.",
              description: u.fold(|||
                keepalived's parent process on {{ $labels.instance }} (job {{ $labels.job }}) started again
                within the last 15 minutes. Each restart moves VIPs (and drops connections) if this node was
                MASTER.
              |||),
              runbook_url: "docs/runbook.md#keepalivedrestarted",
            },
          },
          // ---- split brain ---------------------------------------------------------------------------------
          // The fused verdict (keepalived_split_brain): 1 while any witness the exporter has shows two holders
          // of the VRID: the wire (adverts; also a master silenced by adverts it drops), this node's addresses
          // (it holds the VIPs while another router is master on the wire), liveness (its keepalived claims
          // MASTER, is not heard advertising, and another router is) and L2 (two ARP/ND answerers). Each
          // witness filters failover and preemption overlaps itself (see docs/runbook.md), so `for: 10s` only
          // asks a second rule evaluation to confirm it: fires within ~2 scrape intervals.
          {
            alert: "KeepalivedSplitBrain",
            expr: "keepalived_split_brain{%(kaSelector)s} == 1",
            "for": "10s",
            labels: {
              severity: "critical",
            },
            annotations: {
              summary: "Split brain: several VRRP masters for VRID {{ $labels.vrid }} on {{ $labels.instance }}.",
              description: u.fold(|||
                {{ $labels.instance }} sees more than one holder of VRID {{ $labels.vrid }}
                ({{ $labels.family }}) on {{ $labels.interface }}; witness:
                {{ range $i, $s := printf "keepalived_split_brain_witness{instance=%q,interface=%q,family=%q,vrid=%q} == 1" $labels.instance $labels.interface $labels.family $labels.vrid | query | sortByLabel "witness" }}{{ if $i }},
                {{ end }}{{ $s.Labels.witness }}{{ end }}. Each master holds the VIPs: clients reach either. The
                routers are the `source` labels of
                keepalived_wire_advert_priority{instance="{{ $labels.instance }}",vrid="{{ $labels.vrid }}"}.
              |||),
              runbook_url: "docs/runbook.md#keepalivedsplitbrain",
            },
          },
          // This node's keepalived claims MASTER but the wire has not heard it advertise for the VRID's hold
          // time: hung (SIGSTOP, a stuck VRRP child), its adverts blocked on the way out, or silenced by a
          // misconfigured router whose adverts it drops. While another router advertises this is also
          // KeepalivedSplitBrain (witness liveness); alone it means the backups will take over any moment.
          {
            alert: "KeepalivedMasterSilent",
            expr: "keepalived_master_silent{%(kaSelector)s} == 1",
            "for": "30s",
            labels: {
              severity: "warning",
            },
            annotations: {
              summary: "keepalived on {{ $labels.instance }} claims MASTER for VRID {{ $labels.vrid }} but does not advertise.",
              description: u.fold(|||
                keepalived on {{ $labels.instance }} has reported MASTER for VRID {{ $labels.vrid }}
                ({{ $labels.family }}) on {{ $labels.interface }} for more than 30 seconds while its own adverts
                were not seen on the wire.
              |||),
              runbook_url: "docs/runbook.md#keepalivedmastersilent",
            },
          },
          // A master that is none of ours. Across nodes (signal="nodes"): a source advertising a VRID that some
          // node of the cluster configures, which is router_local (seen outgoing) on no node. Quiet while any
          // target of the cluster is down (its own adverts would count as foreign) and for a minute, so an
          // exporter restart on the master does not fire it. Locally (signal="unicast"): the instance lists
          // its unicast_peer addresses and an advertising source is not among them.
          {
            alert: "KeepalivedForeignMaster",
            expr: |||
              (
                max by (%(clusterLabel)s, family, vrid, source) (
                  (time() - keepalived_wire_last_advert_timestamp_seconds{%(kaSelector)s})
                    < (4 * keepalived_wire_advert_interval_seconds{%(kaSelector)s} + 1)
                  and keepalived_wire_advert_priority{%(kaSelector)s} > 0
                )
                unless on (%(clusterLabel)s, family, vrid, source)
                  max by (%(clusterLabel)s, family, vrid, source) (keepalived_wire_router_local{%(kaSelector)s} == 1)
              )
              and on (%(clusterLabel)s, family, vrid) group by (%(clusterLabel)s, family, vrid) (keepalived_config_instance_info{%(kaSelector)s})
              unless on (%(clusterLabel)s) (min by (%(clusterLabel)s) (up{%(kaSelector)s}) == 0)
            |||,
            "for": "1m",
            labels: {
              severity: "critical",
              signal: "nodes",
            },
            annotations: {
              summary: "Foreign VRRP master {{ $labels.source }} for VRID {{ $labels.vrid }}.",
              description: u.fold(|||
                {{ $labels.source }} advertises VRID {{ $labels.vrid }}
                ({{ $labels.family }}){{ if $labels.cluster }} in cluster {{ $labels.cluster }}{{ end }} and no
                node running ka-exporter sends those adverts. With a higher priority it makes every keepalived
                BACKUP: nobody of ours holds the VIPs.
              |||),
              runbook_url: "docs/runbook.md#keepalivedforeignmaster",
            },
          },
          {
            alert: "KeepalivedForeignMaster",
            expr: "keepalived_foreign_masters{%(kaSelector)s} > 0",
            "for": "10s",
            labels: {
              severity: "critical",
              signal: "unicast",
            },
            annotations: {
              summary: "Foreign VRRP master for VRID {{ $labels.vrid }} seen by {{ $labels.instance }}.",
              description: u.fold(|||
                {{ $value }} router(s) advertise VRID {{ $labels.vrid }} ({{ $labels.family }}) on
                {{ $labels.interface }} as seen from {{ $labels.instance }} that are neither this host nor one
                of its unicast_peer addresses.
              |||),
              runbook_url: "docs/runbook.md#keepalivedforeignmaster",
            },
          },
          // A master advertises the VRID but an ARP/ND probe of its VIP got no answer and this node does not hold
          // it: nobody serves the VIP (a foreign master made every keepalived BACKUP, or the master lost it).
          {
            alert: "KeepalivedVIPUnanswered",
            expr: "keepalived_vips_unanswered{%(kaSelector)s} > 0",
            "for": "30s",
            labels: {
              severity: "critical",
            },
            annotations: {
              summary: "Nobody answers for {{ $value }} VIP(s) of VRID {{ $labels.vrid }} ({{ $labels.instance }}).",
              description: u.fold(|||
                A router advertises VRID {{ $labels.vrid }} ({{ $labels.family }}) on {{ $labels.interface }}
                but {{ $labels.instance }}'s ARP/ND probes of {{ $value }} of its VIPs got no answer for 30
                seconds.
              |||),
              runbook_url: "docs/runbook.md#keepalivedvipunanswered",
            },
          },
          // Across nodes: the same VIP is on more than one node. Plain (non-smoothed) samples: a node whose
          // scrape failed drops out instead of being counted with an old value. A graceful failover or a
          // preemption overlaps for < A = 1 s, visible for at most one scrape; `for: 1m` needs it on every
          // evaluation for a minute. A VIP left behind by a SIGKILLed keepalived while the peer took over DOES
          // fire: both nodes answer ARP for it, which is a real duplicate address.
          {
            alert: "KeepalivedSplitBrainVIP",
            expr: "count by (%(clusterLabel)s, vip) (keepalived_vip_status{%(kaSelector)s} == 1) > 1",
            "for": "1m",
            labels: {
              severity: "critical",
            },
            annotations: {
              summary: "Split brain: VIP {{ $labels.vip }} is held by {{ $value }} nodes.",
              description: u.fold(|||
                VIP {{ $labels.vip }}{{ if $labels.cluster }} (cluster {{ $labels.cluster }}){{ end }} has been
                on {{ $value }} nodes at once for more than 1 minute:
                {{ range $i, $s := printf "keepalived_vip_status{cluster=%q,vip=%q} == 1" $labels.cluster $labels.vip | query | sortByLabel "instance" }}{{ if $i }},
                {{ end }}{{ $s.Labels.instance }}{{ end }}.
              |||),
              runbook_url: "docs/runbook.md#keepalivedsplitbrainvip",
            },
          },
          // Across nodes, from keepalived's own state: more than one node reports MASTER for the same instance
          // name and VRID. Only for targets labelled with a cluster (VRIDs repeat between clusters). The same
          // failover/preemption overlap as above, hence the same `for: 1m`.
          {
            alert: "KeepalivedMultipleMasters",
            expr: "count by (%(clusterLabel)s, iname, vrid) (keepalived_vrrp_state{%(clusterLabel)s!=\"\",%(kaSelector)s} == 2) > 1",
            "for": "1m",
            labels: {
              severity: "critical",
            },
            annotations: {
              summary: "{{ $value }} nodes of cluster {{ $labels.cluster }} are MASTER for VRID {{ $labels.vrid }}.",
              description: u.fold(|||
                In cluster {{ $labels.cluster }}, {{ $value }} nodes have reported MASTER for VRRP instance
                {{ $labels.iname }} (VRID {{ $labels.vrid }}) for more than 1 minute:
                {{ range $i, $s := printf "keepalived_vrrp_state{cluster=%q,iname=%q,vrid=%q} == 2" $labels.cluster $labels.iname $labels.vrid | query | sortByLabel "instance" }}{{ if $i }},
                {{ end }}{{ $s.Labels.instance }}{{ end }}.
              |||),
              runbook_url: "docs/runbook.md#keepalivedmultiplemasters",
            },
          },
          // ---- no master -----------------------------------------------------------------------------------
          // Across nodes: a configured VIP is on no node (every node exports 0 or 1 for each VIP of its
          // keepalived.conf). last_over_time(...[5m]) bridges a scrape gap: when the master's exporter is not
          // scraped for a while its series turn stale, and without it the remaining nodes' zeros would read as
          // "nobody holds it". A failover leaves the VIP on no node for < 4 s (crash) or < A (graceful stop),
          // seen in at most one scrape; `for: 1m` ignores it.
          {
            alert: "KeepalivedNoMaster",
            expr: "max by (%(clusterLabel)s, vip) (last_over_time(keepalived_vip_status{%(kaSelector)s}[5m])) == 0",
            "for": "1m",
            labels: {
              severity: "critical",
              signal: "vip",
            },
            annotations: {
              summary: "No node holds VIP {{ $labels.vip }}.",
              description: u.fold(|||
                VIP {{ $labels.vip }}{{ if $labels.cluster }} (cluster {{ $labels.cluster }}){{ end }} is
                configured on
                {{ range $i, $s := printf "keepalived_vip_status{cluster=%q,vip=%q}" $labels.cluster $labels.vip | query | sortByLabel "instance" }}{{ if $i }},
                {{ end }}{{ $s.Labels.instance }}{{ end }} but none of them has held it for more than 1 minute:
                the service behind it is unreachable.
              |||),
              runbook_url: "docs/runbook.md#keepalivednomaster",
            },
          },
          // From the wire (same alert name, label signal="wire"; the one above has signal="vip"): a VRID that
          // this node configures (or saw before) has no router advertising it. The
          // exporter keeps a router for the master-down interval after its last advert, and a graceful stop
          // hands over within `skew`, so a failover shows at most a sub-second gap, seen in at most one scrape.
          {
            alert: "KeepalivedNoMaster",
            expr: "keepalived_wire_no_master{%(kaSelector)s} == 1",
            "for": "1m",
            labels: {
              severity: "critical",
              signal: "wire",
            },
            annotations: {
              summary: "No VRRP master for VRID {{ $labels.vrid }} seen from {{ $labels.instance }}.",
              description: u.fold(|||
                {{ $labels.instance }} has seen no router advertising VRID {{ $labels.vrid }}
                ({{ $labels.family }}) on {{ $labels.interface }} for more than 1 minute: nobody is master, the
                VIPs of this VRID are down (or this node is cut off from the segment).
              |||),
              runbook_url: "docs/runbook.md#keepalivednomaster",
            },
          },
          // ---- instance health -----------------------------------------------------------------------------
          // Many transitions in a short time: a check script or a link going up and down. A planned failover and
          // failback is 2 transitions per node; a rolling restart of both nodes is at most 3 per node and VRID
          // (INIT->BACKUP->MASTER). 5 or more within 15 minutes is not maintenance. increase() extrapolates to
          // the window's edges (4 real transitions can read 4.07), hence `>= 5` rather than `> 4`. changes() of
          // the state gauge is the fallback when the transition counter is not available (no dumps/D-Bus).
          {
            alert: "KeepalivedStateFlapping",
            expr: |||
              (increase(keepalived_vrrp_transitions_total{%(kaSelector)s}[15m]) >= 5)
              or
              (changes(keepalived_vrrp_state{%(kaSelector)s}[15m]) >= 5)
            |||,
            labels: {
              severity: "warning",
            },
            annotations: {
              summary: "VRRP instance {{ $labels.iname }} (VRID {{ $labels.vrid }}) flaps on {{ $labels.instance }}.",
              description: u.fold(|||
                VRRP instance {{ $labels.iname }} (VRID {{ $labels.vrid }}, {{ $labels.intf }}) on
                {{ $labels.instance }} changed state {{ $value | printf "%.0f" }} times in 15 minutes. Each
                change moves its VIPs between nodes.
              |||),
              runbook_url: "docs/runbook.md#keepalivedstateflapping",
            },
          },
          // keepalived's state and the addresses on the node disagree: MASTER without its VIP, or not MASTER but
          // holding it (stale VIP after SIGKILL, address added by hand). During a transition the two views
          // (D-Bus or dumps vs netlink) can lag each other by a dump refresh; 2m is several refreshes.
          {
            alert: "KeepalivedVIPMismatch",
            expr: "keepalived_vrrp_vip_mismatch{%(kaSelector)s} == 1",
            "for": "2m",
            labels: {
              severity: "warning",
            },
            annotations: {
              summary: "VIPs of {{ $labels.iname }} (VRID {{ $labels.vrid }}) do not match its state on {{ $labels.instance }}.",
              description: u.fold(|||
                On {{ $labels.instance }}, VRRP instance {{ $labels.iname }} (VRID {{ $labels.vrid }},
                {{ $labels.intf }}) is either MASTER without all its VIPs, or not MASTER while still holding
                one, for more than 2 minutes.
              |||),
              runbook_url: "docs/runbook.md#keepalivedvipmismatch",
            },
          },
          // Effective priority below the configured one: a tracked script failed or a tracked interface is down,
          // and keepalived lowered the priority (usually handing the VIPs to the peer). keepalived already
          // debounces scripts with fall/rise; 2m more keeps a service reload from paging.
          {
            alert: "KeepalivedPriorityDegraded",
            expr: "keepalived_vrrp_effective_priority{%(kaSelector)s} < keepalived_vrrp_priority{%(kaSelector)s}",
            "for": "2m",
            labels: {
              severity: "warning",
            },
            annotations: {
              summary: "Priority of {{ $labels.iname }} (VRID {{ $labels.vrid }}) lowered on {{ $labels.instance }}.",
              description: u.fold(|||
                VRRP instance {{ $labels.iname }} (VRID {{ $labels.vrid }}) on {{ $labels.instance }} runs at
                effective priority {{ $value }}, below its configured priority
                {{ with printf "keepalived_vrrp_priority{job=%q,instance=%q,iname=%q,vrid=%q}" $labels.job $labels.instance $labels.iname $labels.vrid | query }}{{ . | first | value }}{{ end }},
                for more than 2 minutes: a tracked script is failing or a tracked interface is down.
              |||),
              runbook_url: "docs/runbook.md#keepalivedprioritydegraded",
            },
          },
          // FAULT: keepalived has taken the instance out (tracked interface down, script in fault). The node
          // cannot take over. A link bounce is shorter than 1m.
          {
            alert: "KeepalivedFault",
            expr: "keepalived_vrrp_state{%(kaSelector)s} == 3",
            "for": "1m",
            labels: {
              severity: "warning",
            },
            annotations: {
              summary: "VRRP instance {{ $labels.iname }} (VRID {{ $labels.vrid }}) is in FAULT on {{ $labels.instance }}.",
              description: u.fold(|||
                VRRP instance {{ $labels.iname }} (VRID {{ $labels.vrid }}, {{ $labels.intf }}) on
                {{ $labels.instance }} has been in FAULT state for more than 1 minute: this node cannot become
                master for it.
              |||),
              runbook_url: "docs/runbook.md#keepalivedfault",
            },
          },
          // ---- wire conflicts --------------------------------------------------------------------------------
          // Routers on the same VRID disagree on VIPs, advert interval, VRRP version or authentication: a VRID
          // collision with another cluster, or a config change applied to one node only. A rolling config reload
          // legitimately disagrees for a few minutes, hence 5m.
          {
            alert: "KeepalivedWireConflict",
            expr: "keepalived_wire_conflict{kind!=\"source\",%(kaSelector)s} == 1",
            "for": "5m",
            labels: {
              severity: "warning",
            },
            annotations: {
              summary: "VRID {{ $labels.vrid }} conflict ({{ $labels.kind }}) seen from {{ $labels.instance }}.",
              description: u.fold(|||
                Routers advertising VRID {{ $labels.vrid }} ({{ $labels.family }}) on {{ $labels.interface }},
                as seen from {{ $labels.instance }}, have disagreed on {{ $labels.kind }} for more than 5
                minutes: a VRID collision with another cluster or a configuration change applied to one node
                only.
              |||),
              runbook_url: "docs/runbook.md#keepalivedwireconflict",
            },
          },
          // One source address sends adverts that contradict each other (VIPs, auth, interval or version going
          // back and forth, or the priority flipping more than 5 times in a hold time): a second sender is using
          // a router's address, i.e. a spoofer or a cloned VM. No configuration change does this (the exporter
          // ignores a single change and a priority-0 stop), and it is an attack on the VIP, hence critical. The
          // verdict itself needs the flapping to repeat within a hold time; `for: 30s` (two scrapes at 15 s)
          // only confirms it.
          {
            alert: "KeepalivedWireSpoofedSource",
            expr: "keepalived_wire_conflict{kind=\"source\",%(kaSelector)s} == 1",
            "for": "30s",
            labels: {
              severity: "critical",
            },
            annotations: {
              summary: "A second sender uses a VRRP router's address for VRID {{ $labels.vrid }}, seen from {{ $labels.instance }}.",
              description: u.fold(|||
                {{ $labels.instance }} sees adverts for VRID {{ $labels.vrid }} ({{ $labels.family }}) on
                {{ $labels.interface }} from one source address that contradict each other: a second sender (a
                spoofer, or a cloned VM) is using a VRRP router's address and may take the VIPs. The routers are
                the `source` labels of
                keepalived_wire_advert_priority{instance="{{ $labels.instance }}",vrid="{{ $labels.vrid }}"}.
              |||),
              runbook_url: "docs/runbook.md#keepalivedwirespoofedsource",
            },
          },
          // ---- the exporter itself -----------------------------------------------------------------------------
          // A source (wire, dbus, dumps, vips, process, config) keeps failing: its series are stale, verdicts
          // built on it are blind. Sources reconnect on their own (keepalived restart drops D-Bus), hence 5m.
          {
            alert: "KeepalivedExporterSourceDown",
            expr: "ka_exporter_source_up{%(kaSelector)s} == 0",
            "for": "5m",
            labels: {
              severity: "warning",
            },
            annotations: {
              summary: "ka-exporter source {{ $labels.source }} is failing on {{ $labels.instance }}.",
              description: u.fold(|||
                The {{ $labels.source }} source of ka-exporter on {{ $labels.instance }} has been failing for
                more than 5 minutes; the metrics it feeds are stale and alerts that depend on them cannot fire.
                The exporter's log and /status page give the reason.
              |||),
              runbook_url: "docs/runbook.md#keepalivedexportersourcedown",
            },
          },
          // A ka-exporter target is not scraped. The `and on (job)` keeps it to jobs that have exported
          // ka_exporter_build_info in the last day (the job name is yours to choose).
          {
            alert: "KeepalivedExporterDown",
            expr: |||
              up{%(kaSelector)s} == 0
              and on (job) group by (job) (last_over_time(ka_exporter_build_info{%(kaSelector)s}[1d]))
            |||,
            "for": "5m",
            labels: {
              severity: "warning",
            },
            annotations: {
              summary: "ka-exporter on {{ $labels.instance }} is not scraped.",
              description: u.fold(|||
                Prometheus has failed to scrape ka-exporter on {{ $labels.instance }} (job {{ $labels.job }})
                for more than 5 minutes; keepalived on that node is unmonitored.
              |||),
              runbook_url: "docs/runbook.md#keepalivedexporterdown",
            },
          },
          // The kernel dropped VRRP packets before the exporter read them (socket buffer full): wire verdicts
          // (split brain, no master) may be wrong while this happens.
          {
            alert: "KeepalivedExporterWireDrops",
            expr: "increase(keepalived_wire_kernel_drops_total{%(kaSelector)s}[10m]) > 0",
            labels: {
              severity: "warning",
            },
            annotations: {
              summary: "ka-exporter on {{ $labels.instance }} is dropping VRRP packets.",
              description: u.fold(|||
                The kernel dropped about {{ $value | printf "%.0f" }} captured packets on {{ $labels.instance }}
                in the last 10 minutes before ka-exporter read them; its wire view (split brain, no master) may
                be wrong.
              |||),
              runbook_url: "docs/runbook.md#keepalivedexporterwiredrops",
            },
          },
        ]),
      },
    ],
  },
}
