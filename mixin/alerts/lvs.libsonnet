// Alerts: keepalived's LVS and the kernel's IPVS. Rendered into alerts/lvs.rules.yml (see mixin/render.jsonnet).
// Each rule's `expr` is a PromQL template filled from _config (utils.rules: %(kaSelector)s, %(clusterLabel)s).
local u = import '../lib/utils.libsonnet';

{
  prometheusAlerts+:: {
    groups+: [
      {
        name: 'keepalived-lvs',
        rules: u.rules($._config, [
          {
            alert: "KeepalivedLVSRealServerDown",
            expr: |||
              keepalived_lvs_real_server_up{%(kaSelector)s} == 0
              unless on (job, instance) keepalived_up{%(kaSelector)s} == 0
            |||,
            "for": "1m",
            labels: {
              severity: "warning",
            },
            annotations: {
              summary: "Real server {{ $labels.real_server }} of {{ $labels.virtual_server }} is down on {{ $labels.instance }}.",
              description: u.fold(|||
                keepalived's health checkers on {{ $labels.instance }} have called real server
                {{ $labels.real_server }} of virtual server {{ $labels.virtual_server }}
                ({{ $labels.protocol }}) down for more than 1 minute: it is out of IPVS (or kept with weight 0
                by inhibit_on_failure) and gets no new connections.
              |||),
              runbook_url: "docs/runbook.md#keepalivedlvsrealserverdown",
            },
          },
          {
            alert: "KeepalivedLVSVirtualServerDegraded",
            expr: |||
              keepalived_lvs_virtual_server_quorum_up{%(kaSelector)s} == 0
              and keepalived_lvs_virtual_server_real_servers_alive{%(kaSelector)s} > 0
              unless on (job, instance) keepalived_up{%(kaSelector)s} == 0
            |||,
            "for": "1m",
            labels: {
              severity: "warning",
            },
            annotations: {
              summary: "Virtual server {{ $labels.virtual_server }} is below its quorum on {{ $labels.instance }}.",
              description: u.fold(|||
                The alive real servers of virtual server {{ $labels.virtual_server }} ({{ $labels.protocol }})
                on {{ $labels.instance }} no longer reach its quorum for more than 1 minute: keepalived ran its
                quorum-down action (and the sorry server, if configured, takes the traffic).
              |||),
              runbook_url: "docs/runbook.md#keepalivedlvsvirtualserverdegraded",
            },
          },
          {
            alert: "KeepalivedLVSVirtualServerDown",
            expr: |||
              keepalived_lvs_virtual_server_real_servers_alive{%(kaSelector)s} == 0
              unless on (job, instance) keepalived_up{%(kaSelector)s} == 0
            |||,
            "for": "30s",
            labels: {
              severity: "critical",
            },
            annotations: {
              summary: "Virtual server {{ $labels.virtual_server }} has no alive real server on {{ $labels.instance }}.",
              description: u.fold(|||
                keepalived on {{ $labels.instance }} calls every real server of virtual server
                {{ $labels.virtual_server }} ({{ $labels.protocol }}) down: clients of this service get refused
                or time out unless a sorry server answers.
              |||),
              runbook_url: "docs/runbook.md#keepalivedlvsvirtualserverdown",
            },
          },
          {
            alert: "KeepalivedLVSIPVSMismatch",
            expr: "keepalived_lvs_real_server_problem{%(kaSelector)s} == 1",
            "for": "1m",
            labels: {
              severity: "warning",
            },
            annotations: {
              summary: "keepalived and IPVS disagree on {{ $labels.real_server }} on {{ $labels.instance }} ({{ $labels.kind }}).",
              description: u.fold(|||
                On {{ $labels.instance }}, real server {{ $labels.real_server }} of virtual server
                {{ $labels.virtual_server }}: {{ if eq $labels.kind "missing_from_ipvs" }}keepalived calls it
                alive but the kernel's IPVS table does not have it (ipvsadm -C / -d by hand?), so it gets no
                traffic{{ else }}keepalived calls it down but IPVS still gives it weight > 0, so new connections
                still go to a failed server{{ end }}, for more than 1 minute.
              |||),
              runbook_url: "docs/runbook.md#keepalivedlvsipvsmismatch",
            },
          },
        ]),
      },
    ],
  },
}
