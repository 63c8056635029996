// Nodes: readiness and pressure, roles, addresses, usage against allocatable, pods,
// and the kubelet's last heartbeat (its Lease in kube-node-lease).

import { Badge, ResourceTable, tableOf } from '../components.jsx';
import {
  age, ago, fmtCPU, fmtMi, mebibytes, milliCPU, nodeAddress, nodeProblems, nodeReady, nodeRoles,
  podTerminal, usage, usageNote,
} from '../format.js';
import { byName, state } from '../store.js';

const READY_TONE = { True: 'ok', False: 'bad', Unknown: 'warn' };

export function NodesView() {
  // Pods running on each node; pods that have finished no longer take a slot.
  const podsKnown = state.res.pods.status !== 'denied';
  const podsOn = new Map();
  for (const pod of state.res.pods.items.values()) {
    const node = pod.spec?.nodeName;
    if (node && !podTerminal(pod)) podsOn.set(node, (podsOn.get(node) || 0) + 1);
  }

  const leasesKnown = state.res.leases.status !== 'denied';
  const metrics = state.metrics.nodes;

  return (
    <ResourceTable
      {...tableOf('nodes', '', byName)}
      title="Nodes"
      note={usageNote(metrics, state.metrics.nodesError)}
      columns={[
        'Name', 'Ready', 'Conditions', 'Roles', 'Internal IP', 'Kubelet', 'CPU used / allocatable',
        'Memory used / allocatable', ['Pods', 'num'], 'Age', 'Last heartbeat',
      ]}
      what="nodes"
      row={(node) => {
        const name = node.metadata.name;
        const ready = nodeReady(node);
        const alloc = node.status?.allocatable || {};
        const m = metrics?.get(name);
        const lease = state.res.leases.items.get(`kube-node-lease/${name}`);
        const renewed = lease?.spec?.renewTime;
        return (
          <tr key={name} data-testid={`node-${name}`}>
            <td class="name">{name}</td>
            <td data-field="ready">
              <Badge tone={READY_TONE[ready] || 'warn'}>{ready}</Badge>
            </td>
            <td>
              {nodeProblems(node).map((c) => (
                <Badge key={c} tone="bad">
                  {c}
                </Badge>
              ))}
              {node.spec?.unschedulable && <Badge tone="warn">SchedulingDisabled</Badge>}
            </td>
            <td>{nodeRoles(node)}</td>
            <td class="mono">{nodeAddress(node, 'InternalIP') || '—'}</td>
            <td>{node.status?.nodeInfo?.kubeletVersion || '—'}</td>
            <td class="mono" data-field="cpu">
              {usage(m?.cpu, milliCPU(alloc.cpu), fmtCPU)}
            </td>
            <td class="mono" data-field="memory">
              {usage(m?.mem, mebibytes(alloc.memory), fmtMi)}
            </td>
            <td class="num" data-field="pods">
              {podsKnown ? podsOn.get(name) || 0 : '—'}
              {alloc.pods ? ` / ${alloc.pods}` : ''}
            </td>
            <td>{age(node.metadata.creationTimestamp)}</td>
            <td data-field="heartbeat" title={renewed || ''}>
              {leasesKnown ? ago(renewed) : '—'}
            </td>
          </tr>
        );
      }}
    />
  );
}
