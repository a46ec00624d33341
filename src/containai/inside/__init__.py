"""The programs that run inside ContainAI's images, and the protocol they share with the host.

    protocol.py    uids, paths, names and words that the host side and the images must agree on
    stub.py        mcp-stub: the agent's MCP servers, with secrets the agent never holds (base image)
    entrypoint.py  containai-entrypoint: PID 1 of a session, and the environment allow-list (base image)
    gateway.py     containai-gateway: the model-credential gateway (gateway image)
    logfwd.py      containai-logfwd: the log forwarder (logfwd image)

Standard library only, and nothing from the rest of ``containai``: the image build copies this
package into the images (``/usr/local/lib/containai``), where small launchers at the usual paths
(``/usr/local/bin/mcp-stub`` and the others) run each program's ``main`` under ``python3 -I``.
A unit test holds the package to that.
"""
