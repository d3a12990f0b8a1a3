"""One end of MPI.Comm.Join over TCP: `listen PORTFILE` or `connect
PORTFILE` (the two ends run as separate launches)."""
import os, socket, sys, time
from oxmpi import MPI
role, port_file = sys.argv[1], sys.argv[2]
if role == "listen":
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
    with open(port_file + ".tmp", "w") as f:  # the reader never sees half of it
        f.write(str(srv.getsockname()[1]))
    os.replace(port_file + ".tmp", port_file)
    sock, _ = srv.accept()
else:
    for _ in range(1200):  # up to a minute: the other job may start slowly
        try:
            port = int(open(port_file).read()); break
        except (OSError, ValueError):
            time.sleep(0.05)
    sock = socket.create_connection(("127.0.0.1", port))
inter = MPI.Comm.Join(sock.fileno())
me = inter.Get_rank()
other = inter.sendrecv(f"{role} pid", dest=0, source=0)
print(role, "joined; other says", other, "remote size", inter.Get_remote_size(), flush=True)
inter.Disconnect()
