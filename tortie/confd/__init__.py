"""``tortie-confd``: BIRD configuration from the datastore (ARCHITECTURE §9).

Layers, from pure to I/O:

- `tortie.confd.model`: `Snapshot`, what confd knows of the datastore (Nodes, BGP
  configuration, peers, filters, pools and this node's block affinities), fed by Syncer updates.
- `tortie.confd.peers`: which BGP sessions this node has (mesh, global, node-specific, reverse
  and route-reflector peerings), computed as Calico's confd does.
- `tortie.confd.render`: `render(snapshot, node) -> text`: the view model and the Jinja2
  templates in ``tortie/confd/templates``. No I/O.
- `tortie.confd.bird`: BIRD itself: ``bird -p`` checks, the control-socket protocol
  (``configure``, ``show protocols``), peer-table parsing.
- `tortie.confd.daemon`: the process: watch, render, write, check, reload, status file.
- `tortie.confd.lab`: starting confd and BIRD on lab nodes.
"""
