import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { guestRoutes, networkNamespaceOf, pickCniInterface, TAP_NAME } from './pod-network.js';

describe('pod network: what CNI left in the namespace', () => {
  it('finds the network namespace path of a spec, not a new or absent one', () => {
    assert.equal(networkNamespaceOf({ linux: { namespaces: [{ type: 'pid' }, { type: 'network', path: '/var/run/netns/cni-1' }] } }), '/var/run/netns/cni-1');
    assert.equal(networkNamespaceOf({ linux: { namespaces: [{ type: 'network' }] } }), undefined);
    assert.equal(networkNamespaceOf({ linux: {} }), undefined);
    assert.equal(networkNamespaceOf({}), undefined);
  });

  it('picks the Ethernet interface with an IPv4 address (eth0 first), never lo or the tap', () => {
    const inet = [{ family: 'inet', local: '10.0.0.2', prefixlen: 24 }];
    const links = [
      { ifname: 'lo', link_type: 'loopback', addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8 }] },
      { ifname: TAP_NAME, link_type: 'ether', addr_info: inet },
      { ifname: 'net1', link_type: 'ether', addr_info: inet },
      { ifname: 'eth0', link_type: 'ether', address: '02:00:00:00:00:01', addr_info: inet },
    ];
    assert.equal(pickCniInterface(links)?.ifname, 'eth0');
    assert.equal(pickCniInterface(links.slice(0, 3))?.ifname, 'net1');
    assert.equal(pickCniInterface([links[0], { ifname: 'eth0', link_type: 'ether', addr_info: [] }]), undefined, 'no address: no pod network');
  });

  it("keeps the interface's own routes for the guest, not the kernel's link routes", () => {
    const routes = [
      { dst: 'default', gateway: '10.0.0.1', dev: 'eth0' },
      { dst: '10.0.0.0/24', dev: 'eth0', protocol: 'kernel', scope: 'link' },
      { dst: '10.96.0.0/12', gateway: '10.0.0.1', dev: 'eth0' },
      { dst: '192.168.0.0/16', dev: 'other' },
    ];
    assert.deepEqual(guestRoutes(routes, 'eth0'), [
      { destination: 'default', gateway: '10.0.0.1', device: 'eth0' },
      { destination: '10.96.0.0/12', gateway: '10.0.0.1', device: 'eth0' },
    ]);
  });
});
