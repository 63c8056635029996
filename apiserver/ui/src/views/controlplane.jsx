// The control plane itself: the store's members and raft state (from Capstan's
// /ui/api/controlplane, polled) and who holds the kube-system leases (watched).

import { Badge, Grid, ResourceTable, tableOf } from '../components.jsx';
import { ago, fmtBytes } from '../format.js';
import { byName, state } from '../store.js';

function Stat({ label, value, testid }) {
  return (
    <div class="stat">
      <div class="stat-label">{label}</div>
      <div class="stat-value" data-testid={testid}>
        {value}
      </div>
    </div>
  );
}

// A member's own raft state, as it answered; why it did not, across the same cells; or
// dashes where it was not asked (the API server runs against a remote etcd).
function MemberRaft({ m }) {
  const s = m.status;
  if (m.error) {
    return (
      <td colSpan={5} class="denied" data-field="member-error" title={m.error}>
        unreachable: {m.error}
      </td>
    );
  }
  return (
    <>
      <td class="num">{s ? s.raftTerm : '—'}</td>
      <td class="num" data-field="member-raft-index">
        {s ? s.raftIndex : '—'}
      </td>
      <td class="num">{s ? s.raftAppliedIndex : '—'}</td>
      <td class="num">{s ? s.revision : '—'}</td>
      <td class="num">{s ? fmtBytes(s.dbSizeBytes) : '—'}</td>
    </>
  );
}

function Store() {
  const cp = state.controlplane;
  const d = cp.data;
  if (!d) {
    return (
      <section class="card">
        <header class="card-head">
          <h2>Store</h2>
        </header>
        <p class={cp.status === 'error' ? 'denied' : 'muted'} data-testid="controlplane-status">
          {cp.status === 'idle' ? 'Loading…' : cp.message}
        </p>
      </section>
    );
  }
  const members = [...(d.members || [])].sort((a, b) => (a.name || a.id).localeCompare(b.name || b.id));
  const leader = members.find((m) => m.id === d.leader);
  const self = d.member?.id;
  return (
    <section class="card">
      <header class="card-head">
        <h2>Store</h2>
        {cp.status === 'error' && <span class="stale">stale: {cp.message}</span>}
      </header>
      <div class="stats">
        {/* "—" while there is no leader (an election is under way). */}
        <Stat label="Leader" testid="leader" value={d.leader ? leader?.name || d.leader : '—'} />
        <Stat label="Raft term" testid="raft-term" value={d.raftTerm} />
        <Stat label="Raft index" testid="raft-index" value={d.raftIndex} />
        <Stat label="Applied index" testid="raft-applied-index" value={d.raftAppliedIndex} />
        <Stat label="Revision" testid="revision" value={d.revision} />
        <Stat label="DB size (in use / total)" testid="db-size" value={`${fmtBytes(d.dbSizeInUseBytes)} / ${fmtBytes(d.dbSizeBytes)}`} />
      </div>
      <Grid
        columns={['Name', 'ID', 'Role', ['Term', 'num'], ['Raft index', 'num'], ['Applied', 'num'], ['Revision', 'num'], ['DB size', 'num'], 'Peer URLs', 'Client URLs']}
        what="members"
        rows={members}
        row={(m) => (
          <tr key={m.id} data-testid={`member-${m.name || m.id}`} class={m.id === d.leader ? 'leader' : ''}>
            <td class="name">
              {m.name || '(unstarted)'}
              {m.id === self && (
                <Badge tone="info" title="the member this API server reads from">
                  this API server
                </Badge>
              )}
            </td>
            <td class="mono">{m.id}</td>
            <td data-field="role">{m.id === d.leader ? <Badge tone="ok">leader</Badge> : m.isLearner ? 'learner' : 'follower'}</td>
            <MemberRaft m={m} />
            <td class="mono">{(m.peerURLs || []).join(', ')}</td>
            <td class="mono">{(m.clientURLs || []).join(', ')}</td>
          </tr>
        )}
      />
    </section>
  );
}

function Leases() {
  return (
    <ResourceTable
      {...tableOf('leases', 'kube-system', byName)}
      title="Lease holders (kube-system)"
      columns={['Lease', 'Holder', 'Renewed', ['Duration', 'num'], ['Transitions', 'num']]}
      what="leases"
      row={(l) => {
        const s = l.spec || {};
        return (
          <tr key={l.metadata.name} data-testid={`lease-${l.metadata.name}`}>
            <td class="name">{l.metadata.name}</td>
            <td data-field="holder">{s.holderIdentity || '—'}</td>
            <td title={s.renewTime || ''}>{ago(s.renewTime)}</td>
            <td class="num">{s.leaseDurationSeconds != null ? `${s.leaseDurationSeconds}s` : '—'}</td>
            <td class="num">{s.leaseTransitions ?? 0}</td>
          </tr>
        );
      }}
    />
  );
}

export function ControlPlaneView() {
  return (
    <>
      <Store />
      <Leases />
    </>
  );
}
