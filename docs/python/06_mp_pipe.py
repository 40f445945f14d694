"""Twin of crates/mp-pipe: multiprocessing.Pipe both ways and one way, poll,
EOFError only when every copy of the write end is closed (the parent's, then
the child's), no feeder thread, two readers and two writers on one end.

Run: python3 06_mp_pipe.py            (the lesson, a few seconds)
     python3 06_mp_pipe.py --bench    (round trips and messages per second,
                                       the same rows as `cargo bench -p mp-pipe`)
     python3 06_mp_pipe.py --bench --quick
"""
import multiprocessing as mp
import os
import pickle
import select
import socket
import struct
import sys
import threading
import time

ctx = mp.get_context("fork")
NUMBERS = [2, 3, 8]
SQUARES = [n * n for n in NUMBERS]
NO_EOF = 3
PIPE_BUF = select.PIPE_BUF  # 4096 on Linux: pipe(7) makes such writes atomic


def squarer(parent_end, child_end):
    parent_end.close()  # fork copied the parent's end: close this copy
    while True:
        try:
            n = child_end.recv()
        except EOFError:  # the parent closed its end
            return
        child_end.send((os.getpid(), n * n))


def writer(r, w):
    r.close()
    for sq in SQUARES:
        w.send(sq)


def read_until_eof(r, close_w, w):
    if close_w:
        w.close()  # the fix: close the inherited copy of the write end
    got = [r.recv() for _ in SQUARES]
    how = "closed" if close_w else "kept"
    if not r.poll(1):  # the watchdog: recv() would wait forever
        print(f"    {how} w: child pid {os.getpid()} got {got}, then no EOF")
        print("      after 1 s: it holds a write end itself")
        os._exit(NO_EOF)
    try:
        r.recv()
    except EOFError:
        print(f"    {how} w: child pid {os.getpid()} got {got}, then EOF")


def seq_reader(recv_sock, send_sock, report):
    send_sock.close()  # or no reader ever sees EOF
    got = []
    while True:
        record = recv_sock.recv(65536)  # one whole record per recv
        if not record:
            break
        got.append(pickle.loads(record))
        time.sleep(0.002)  # "work" on it
    report.send(got)


def frame_writer(r, w, tag, size, frames):
    os.close(r)
    body = struct.pack("!i", size - 4) + bytes([tag]) * (size - 4)
    try:
        for _ in range(frames):
            os.write(w, body)  # one write per frame
    except BrokenPipeError:
        pass


def read_exact(fd, n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def read_frames(r):
    whole = {ord("A"): 0, ord("B"): 0}
    while True:
        header = read_exact(r, 4)
        if header is None:
            return whole, None
        (n,) = struct.unpack("!i", header)
        if not 0 <= n <= 1 << 26:
            return whole, f"a length header of {n} bytes"
        body = read_exact(r, n)
        if body is None:
            return whole, "the stream ended inside a message"
        if body[0] in whole and body.count(body[0]) == n:
            whole[body[0]] += 1
        else:
            return whole, f"frame {sum(whole.values()) + 1} is torn"


def lesson():
    print("[1] Pipe(): the parent sends numbers, a child sends back squares")
    parent_end, child_end = ctx.Pipe()
    p = ctx.Process(target=squarer, args=(parent_end, child_end))
    p.start()
    child_end.close()  # the child has its own copy now
    early = parent_end.poll(0.1)
    print(f"    poll(0.1) before the first send: {early}")
    got, ready = [], True
    for n in NUMBERS:
        parent_end.send(n)
        ready &= parent_end.poll(10)
        pid, sq = parent_end.recv()
        got.append(sq)
    parent_end.close()
    p.join(10)
    print(f"    got {got} from pid {pid}; the child: exitcode {p.exitcode}")
    assert got == SQUARES and not early and ready and p.exitcode == 0

    print("[2] Pipe(duplex=False): one way only, on a real pipe")
    r, w = ctx.Pipe(duplex=False)
    try:
        r.send(1)
    except OSError as e:
        print(f"    r.send(1): {e}")
    p = ctx.Process(target=writer, args=(r, w))
    p.start()
    w.close()
    got = []
    while True:
        try:
            got.append(r.recv())
        except EOFError:
            break
    p.join(10)
    print(f"    r.recv() until EOFError: {got}; the child: exitcode {p.exitcode}")
    assert got == SQUARES
    r.close()

    print("[3] EOFError needs every copy of the write end closed: the parent's")
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=writer, args=(r, w))
    p.start()
    p.join(10)  # the bug: the parent never closes w
    got = [r.recv() for _ in SQUARES]
    eof = r.poll(1)
    print(f"    the child wrote {got} and ended (exitcode {p.exitcode})")
    print("    no EOF after 1 s: the parent still holds the write end")
    assert not eof
    w.close()
    try:
        r.recv()
        raise AssertionError("a value after the end")
    except EOFError:
        print("    after w.close() in the parent: recv() raises EOFError at once")
    r.close()

    print("[4] EOFError needs every copy closed: the child's copy of w too")
    codes = []
    for close_w in (False, True):
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=read_until_eof, args=(r, close_w, w))
        p.start()
        r.close()
        for sq in SQUARES:
            w.send(sq)
        w.close()
        p.join(12)
        codes.append(p.exitcode)
    assert codes == [NO_EOF, 0], codes

    print("[5] no feeder thread, no lock: send() writes in the caller")
    a, b = ctx.Pipe()
    for n in NUMBERS:
        a.send(n)
    threads = threading.active_count()
    wire = os.read(b.fileno(), 65536)
    print(f"    after {len(NUMBERS)} sends: {threads} thread here; {len(wire)} bytes in the socket")
    first = wire[: 4 + struct.unpack("!i", wire[:4])[0]]
    print(f"    send({NUMBERS[0]}) wrote {first.hex(' ')}: length, then pickle")
    assert threads == 1 and pickle.loads(first[4:]) == NUMBERS[0]
    a.close()
    b.close()

    print("[6] two processes read one end: 12 messages")
    send_sock, recv_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    readers = []
    for name in "AB":
        report_r, report_w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=seq_reader, args=(recv_sock, send_sock, report_w))
        p.start()
        report_w.close()
        readers.append((name, p, report_r))
    recv_sock.close()
    for i in range(12):
        send_sock.send(pickle.dumps(i))
    send_sock.close()
    everything = []
    for name, p, report in readers:
        got = report.recv() if report.poll(10) else []
        p.join(10)
        print(f"    reader {name} (pid {p.pid}): {got} (exitcode {p.exitcode})")
        everything += got
    assert sorted(everything) == list(range(12))

    print("[7] two processes write one pipe, about 256 KiB each")
    for size in (PIPE_BUF, 65536 + 4):
        frames = -(-256 * 1024 // size)  # rounded up: 64 x 4096 B, 4 x 65540 B
        r, w = os.pipe()
        writers = [
            ctx.Process(target=frame_writer, args=(r, w, tag, size, frames))
            for tag in b"AB"
        ]
        for p in writers:
            p.start()
        os.close(w)
        whole, torn = read_frames(r)
        os.close(r)
        for p in writers:
            p.join(10)
        line = f"    {size}-byte frames: A {whole[65]} and B {whole[66]} whole"
        print(f"{line}; then {torn}" if torn else line)
        if size <= PIPE_BUF:
            assert torn is None and list(whole.values()) == [frames, frames]
    print("all claims held")


# --- --bench: the same rows as `cargo bench -p mp-pipe` ---------------------


def stream_child(r, w, n):
    r.close()
    for i in range(n):
        w.send(i)


def echo_child(parent_end, child_end):
    parent_end.close()
    while True:
        try:
            child_end.send(child_end.recv())
        except EOFError:
            return


def raw_stream_child(w, n):
    for i in range(n):
        os.write(w, i.to_bytes(8, "little"))


def raw_echo_child(r, w, trips):
    for _ in range(trips + 1):
        os.write(w, os.read(r, 8))


def pipe_stream(duplex, n):
    r, w = ctx.Pipe(duplex=duplex)
    p = ctx.Process(target=stream_child, args=(r, w, n))
    p.start()
    w.close()
    t = time.perf_counter()
    for i in range(n):
        assert r.recv() == i
    took = time.perf_counter() - t
    p.join(30)
    r.close()
    return took


def pipe_ping_pong(trips):
    mine, theirs = ctx.Pipe()
    p = ctx.Process(target=echo_child, args=(mine, theirs))
    p.start()
    theirs.close()
    mine.send(-1)
    assert mine.recv() == -1
    t = time.perf_counter()
    for i in range(trips):
        mine.send(i)
        assert mine.recv() == i
    took = time.perf_counter() - t
    mine.close()
    p.join(30)
    return took


def raw_stream(n):
    r, w = os.pipe()
    p = ctx.Process(target=raw_stream_child, args=(w, n))
    p.start()
    os.close(w)
    t = time.perf_counter()
    for i in range(n):
        assert int.from_bytes(read_exact(r, 8), "little") == i
    took = time.perf_counter() - t
    p.join(30)
    os.close(r)
    return took


def raw_ping_pong(trips):
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    p = ctx.Process(target=raw_echo_child, args=(to_child_r, to_parent_w, trips))
    p.start()
    msg = (0).to_bytes(8, "little")
    os.write(to_child_w, msg)
    read_exact(to_parent_r, 8)
    t = time.perf_counter()
    for _ in range(trips):
        os.write(to_child_w, msg)
        read_exact(to_parent_r, 8)
    took = time.perf_counter() - t
    p.join(30)
    for fd in (to_child_r, to_child_w, to_parent_r, to_parent_w):
        os.close(fd)
    return took


def bench(quick):
    messages = 5_000 if quick else 500_000
    trips = 500 if quick else 50_000
    rounds = 1 if quick else 3
    best = lambda f, *a: min(f(*a) for _ in range(rounds))  # noqa: E731
    print(f"Python {sys.version.split()[0]}: {messages} messages one way, "
          f"{trips} round trips; best of {rounds}")
    duplex = messages / best(pipe_stream, True, messages)
    oneway = messages / best(pipe_stream, False, messages)
    raw = messages / best(raw_stream, messages)
    rtt = best(pipe_ping_pong, trips) / trips
    raw_rtt = best(raw_ping_pong, trips) / trips
    print(f"{'':<40} {'messages/s':>12} {'round trip':>11}")
    print(f"{'Pipe(), socketpair, pickle':<40} {duplex:>12.0f} {rtt * 1e6:>8.1f} us")
    print(f"{'Pipe(duplex=False), os.pipe, pickle':<40} {oneway:>12.0f}")
    print(f"{'raw os.pipe, 8-byte write/read':<40} {raw:>12.0f} {raw_rtt * 1e6:>8.1f} us")
    print(f"same run: raw / Pipe() {raw / duplex:.1f}x messages/s, "
          f"Pipe() / raw {rtt / raw_rtt:.1f}x round trip")


if __name__ == "__main__":
    if "--bench" in sys.argv:
        bench("--quick" in sys.argv)
    else:
        lesson()
