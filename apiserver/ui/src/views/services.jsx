// Services with the addresses behind them, from the Endpoints object of the same name.

import { ResourceTable, tableOf } from '../components.jsx';
import { age, endpointAddresses, servicePorts } from '../format.js';
import { byNamespaceAndName, state } from '../store.js';
import { keyOf } from '../watch.js';

// A Service can have thousands of endpoints; the cell lists this many.
const ADDRESSES_SHOWN = 20;

function Endpoints({ svc }) {
  const epSlot = state.res.endpoints;
  if (epSlot.status === 'denied') return <span class="muted">—</span>;
  if (!svc.spec?.selector && svc.spec?.type === 'ExternalName') return <span class="muted">{svc.spec.externalName}</span>;
  const ep = epSlot.items.get(keyOf(svc));
  const addrs = endpointAddresses(ep);
  if (!addrs.length) return <span class="muted">&lt;none&gt;</span>;
  return (
    <span class="addrs">
      {addrs.slice(0, ADDRESSES_SHOWN).map((a, i) =>
        a.ready ? (
          <span key={i} class="addr mono">
            {a.addr}
          </span>
        ) : (
          <span key={i} class="addr mono notready" title="not ready">
            {a.addr} (not ready)
          </span>
        ),
      )}
      {addrs.length > ADDRESSES_SHOWN && <span class="muted">+{addrs.length - ADDRESSES_SHOWN} more</span>}
    </span>
  );
}

export function ServicesView({ ns }) {
  const epDenied = state.res.endpoints.status === 'denied';
  return (
    <ResourceTable
      {...tableOf('services', ns, byNamespaceAndName)}
      title="Services"
      note={epDenied ? `endpoints: ${state.res.endpoints.message}` : ''}
      columns={['Namespace', 'Name', 'Type', 'Cluster IP', 'Ports', 'Endpoints', 'Age']}
      what="services"
      row={(svc) => (
        <tr key={svc.metadata.uid} data-testid={`service-${svc.metadata.namespace}-${svc.metadata.name}`}>
          <td>{svc.metadata.namespace}</td>
          <td class="name">{svc.metadata.name}</td>
          <td>{svc.spec?.type || 'ClusterIP'}</td>
          <td class="mono">{svc.spec?.clusterIP || '—'}</td>
          <td class="mono">{servicePorts(svc)}</td>
          <td data-field="endpoints">
            <Endpoints svc={svc} />
          </td>
          <td>{age(svc.metadata.creationTimestamp)}</td>
        </tr>
      )}
    />
  );
}
