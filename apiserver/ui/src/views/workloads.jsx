// Workloads: Deployments (with Scale and Delete), ReplicaSets and Pods (with Logs).
// Actions go through the API with the user's own credentials; the tables change only
// when the watch reports the change, never optimistically.

import { useRef, useState } from 'preact/hooks';
import { sendJSON } from '../api.js';
import { Badge, ResourceTable, tableOf } from '../components.jsx';
import { age, fmtCPU, fmtMi, podReady, podRestarts, podStatus, statusTone, usageNote } from '../format.js';
import { byNamespaceAndName, changed, state } from '../store.js';

const REPLICAS_MAX = 1000;

const deploymentPath = (d) =>
  `/apis/apps/v1/namespaces/${encodeURIComponent(d.metadata.namespace)}/deployments/${encodeURIComponent(d.metadata.name)}`;

function scaleDeployment(d, replicas) {
  return sendJSON('PATCH', `${deploymentPath(d)}/scale`, { spec: { replicas } }, 'application/merge-patch+json');
}

function deleteDeployment(d) {
  return sendJSON('DELETE', deploymentPath(d), {
    kind: 'DeleteOptions',
    apiVersion: 'v1',
    propagationPolicy: 'Background',
  });
}

export function ActionError({ message, onDismiss }) {
  if (!message) return null;
  return (
    <div class="action-error" data-testid="action-error" role="alert">
      <span>{message}</span>
      {/* The × comes from CSS, so the element's text is exactly the Status message. */}
      <button type="button" class="dismiss" aria-label="Dismiss" title="Dismiss" onClick={onDismiss} />
    </div>
  );
}

function DeploymentRow({ d }) {
  const [confirming, setConfirming] = useState(false);
  const [busy, setBusy] = useState('');
  const [error, setError] = useState('');
  const input = useRef(null);
  const spec = d.spec?.replicas ?? 1;
  const st = d.status || {};
  const ns = d.metadata.namespace;
  const name = d.metadata.name;

  // The input follows spec.replicas until the user types in it (an uncontrolled input
  // with defaultValue), so a re-render never clobbers what is being typed.
  const run = async (what, fn) => {
    setBusy(what);
    setError('');
    try {
      await fn();
    } catch (e) {
      setError(e.message || String(e));
    } finally {
      setBusy('');
    }
  };

  const onScale = (ev) => {
    ev.preventDefault();
    const raw = input.current?.value.trim() ?? '';
    const n = Number(raw);
    if (raw === '' || !Number.isInteger(n) || n < 0 || n > REPLICAS_MAX) {
      setError(`Replicas must be a whole number from 0 to ${REPLICAS_MAX}.`);
      return;
    }
    run('scale', () => scaleDeployment(d, n));
  };

  const onDelete = () => {
    setConfirming(false);
    run('delete', () => deleteDeployment(d));
  };

  return (
    <tr data-testid={`deployment-${ns}-${name}`} class={d.metadata.deletionTimestamp ? 'going' : ''}>
      <td>{ns}</td>
      <td class="name">{name}</td>
      <td class="num" data-field="ready">{`${st.readyReplicas || 0}/${spec}`}</td>
      <td class="num" data-field="replicas">{String(spec)}</td>
      <td class="num" data-field="updated">{st.updatedReplicas || 0}</td>
      <td class="num" data-field="available">{st.availableReplicas || 0}</td>
      <td>{age(d.metadata.creationTimestamp)}</td>
      <td class="actions">
        <div class="row-actions">
          <form class="inline" noValidate onSubmit={onScale}>
            <input
              ref={input}
              type="number"
              min="0"
              max={REPLICAS_MAX}
              step="1"
              defaultValue={String(spec)}
              aria-label={`Replicas for ${name}`}
              data-testid="scale-input"
            />
            <button type="submit" data-testid="scale" disabled={busy !== ''}>
              {busy === 'scale' ? 'Scaling…' : 'Scale'}
            </button>
          </form>
          {confirming ? (
            <>
              <button type="button" class="danger" data-testid="confirm-delete" onClick={onDelete}>
                Confirm delete
              </button>
              <button type="button" data-testid="cancel-delete" onClick={() => setConfirming(false)}>
                Cancel
              </button>
            </>
          ) : (
            <button type="button" data-testid="delete" disabled={busy !== ''} onClick={() => setConfirming(true)}>
              {busy === 'delete' ? 'Deleting…' : 'Delete'}
            </button>
          )}
        </div>
        <ActionError message={error} onDismiss={() => setError('')} />
      </td>
    </tr>
  );
}

function Deployments({ ns }) {
  return (
    <ResourceTable
      {...tableOf('deployments', ns, byNamespaceAndName)}
      title="Deployments"
      columns={[
        'Namespace', 'Name', ['Ready', 'num'], ['Replicas', 'num'], ['Up-to-date', 'num'], ['Available', 'num'],
        'Age', 'Actions',
      ]}
      what="deployments"
      row={(d) => <DeploymentRow key={d.metadata.uid || `${d.metadata.namespace}/${d.metadata.name}`} d={d} />}
    />
  );
}

function ReplicaSets({ ns }) {
  return (
    <ResourceTable
      {...tableOf('replicasets', ns, byNamespaceAndName)}
      title="ReplicaSets"
      columns={['Namespace', 'Name', ['Desired', 'num'], ['Current', 'num'], ['Ready', 'num'], 'Owner', 'Age']}
      what="replica sets"
      row={(rs) => {
        const owner = (rs.metadata.ownerReferences || []).find((o) => o.controller) || rs.metadata.ownerReferences?.[0];
        const desired = rs.spec?.replicas ?? 1;
        return (
          <tr key={rs.metadata.uid} class={desired === 0 ? 'dim' : ''} data-testid={`replicaset-${rs.metadata.namespace}-${rs.metadata.name}`}>
            <td>{rs.metadata.namespace}</td>
            <td class="name">{rs.metadata.name}</td>
            <td class="num">{desired}</td>
            <td class="num">{rs.status?.replicas || 0}</td>
            <td class="num">{rs.status?.readyReplicas || 0}</td>
            <td>{owner ? `${owner.kind}/${owner.name}` : '—'}</td>
            <td>{age(rs.metadata.creationTimestamp)}</td>
          </tr>
        );
      }}
    />
  );
}

function openLogs(pod) {
  state.logs = {
    namespace: pod.metadata.namespace,
    name: pod.metadata.name,
    containers: (pod.spec?.containers || []).map((c) => c.name),
  };
  changed();
}

function Pods({ ns }) {
  const metrics = state.metrics.pods;
  return (
    <ResourceTable
      {...tableOf('pods', ns, byNamespaceAndName)}
      title="Pods"
      note={usageNote(metrics, state.metrics.podsError)}
      columns={[
        'Namespace', 'Name', ['Ready', 'num'], 'Status', ['Restarts', 'num'], 'Node', 'IP', 'Age', ['CPU', 'num'],
        ['Memory', 'num'], null, // the Logs buttons' column has no heading
      ]}
      what="pods"
      row={(pod) => {
        const { namespace, name } = pod.metadata;
        const status = podStatus(pod);
        const m = metrics?.get(`${namespace}/${name}`);
        return (
          <tr key={pod.metadata.uid || `${namespace}/${name}`} data-testid={`pod-${namespace}-${name}`}>
            <td>{namespace}</td>
            <td class="name">{name}</td>
            <td class="num" data-field="ready">{podReady(pod)}</td>
            <td data-field="status">
              <Badge tone={statusTone(status)} title={pod.status?.message || ''}>
                {status}
              </Badge>
            </td>
            <td class="num" data-field="restarts">{podRestarts(pod)}</td>
            <td>{pod.spec?.nodeName || '—'}</td>
            <td class="mono">{pod.status?.podIP || '—'}</td>
            <td>{age(pod.metadata.creationTimestamp)}</td>
            <td class="num mono" data-field="cpu">{fmtCPU(m?.cpu)}</td>
            <td class="num mono" data-field="memory">{fmtMi(m?.mem)}</td>
            <td>
              <button type="button" data-testid="logs" onClick={() => openLogs(pod)}>
                Logs
              </button>
            </td>
          </tr>
        );
      }}
    />
  );
}

export function WorkloadsView({ ns }) {
  return (
    <>
      <Deployments ns={ns} />
      <ReplicaSets ns={ns} />
      <Pods ns={ns} />
    </>
  );
}
