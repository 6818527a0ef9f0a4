"Loading, checking and downloading MNIST: the real file, hostile files, and a real HTTP server on 127.0.0.1."
import gzip, hashlib, http.server, os, pickle, threading
from pathlib import Path
import numpy as np, pytest, torch
from miniai import datasets
from miniai.datasets import get_mnist, load_mnist, download, data_dir, DataFileError, MNIST_SIZES

def test_real_file(mnist_dir):
    (xt, yt), (xv, yv), (xs, ys) = get_mnist(mnist_dir)
    assert [len(xt), len(xv), len(xs)] == list(MNIST_SIZES)
    assert xt.dtype == torch.float32 and yt.dtype == torch.int64 and xt.shape[1] == 784
    assert (torch.bincount(torch.cat([yt, yv])).tolist()
            == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    assert torch.bincount(ys).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert (xt[0][200:210]*256).long().tolist() == [0, 0, 0, 49, 238, 253, 253, 253, 253, 253]
    assert yt[:5].tolist() == [5, 0, 4, 1, 9]
    assert 0 <= xt.min() and xt.max() == 255/256

def test_data_dir_read_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv('MINIAI_DATA', str(tmp_path/'a'))
    assert data_dir() == tmp_path/'a'
    monkeypatch.setenv('MINIAI_DATA', str(tmp_path/'b'))
    assert data_dir() == tmp_path/'b'
    monkeypatch.delenv('MINIAI_DATA'); monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path/'c'))
    assert data_dir() == tmp_path/'c'/'miniai'

def _write(path, obj):
    with gzip.open(path, 'wb') as f: pickle.dump(obj, f, protocol=2)
    return path

class Evil:
    def __reduce__(self): return (os.system, (f"touch {Evil.marker}",))

def test_code_in_pickle_is_refused_and_not_run(tmp_path):
    Evil.marker = tmp_path/'pwned'
    fn = _write(tmp_path/'mnist.pkl.gz', Evil())
    with pytest.raises(DataFileError, match=r"refusing to load posix\.system.*Delete it to download it again"):
        load_mnist(fn)
    assert not Evil.marker.exists()
    # and plain pickle really would have run it: the test file is live
    with gzip.open(fn) as f: pickle.load(f)
    assert Evil.marker.exists()

def test_truncated_file(mnist_dir, tmp_path):
    fn = tmp_path/'mnist.pkl.gz'
    fn.write_bytes((mnist_dir/'mnist.pkl.gz').read_bytes()[:1_000_000])
    with pytest.raises(DataFileError, match=rf"{fn}.*cannot be read.*Delete it to download it again"): load_mnist(fn)

def test_not_gzip(tmp_path):
    fn = tmp_path/'mnist.pkl.gz'; fn.write_text('<html>rate limited</html>')
    with pytest.raises(DataFileError, match='cannot be read'): load_mnist(fn)

def _split(n, d=784, xdt=np.float32, ydt=np.int64):
    return (np.zeros((n, d), xdt), np.zeros(n, ydt))

@pytest.mark.parametrize('data,msg', [
    ((_split(50_000), _split(10_000)), r'expected \(\(x_train'),
    ((_split(500), _split(10_000), _split(10_000)), r'train images have shape \(500, 784\), expected \(50000, 784\)'),
    ((_split(50_000, 28), _split(10_000), _split(10_000)), r'expected \(50000, 784\)'),
    ((_split(50_000), _split(10_000, xdt=np.float64), _split(10_000)), 'valid dtypes are float64/int64'),
    ((_split(50_000), _split(10_000), _split(10_000, ydt=np.int32)), 'test dtypes are float32/int32'),
])
def test_wrong_layout(tmp_path, data, msg):
    fn = _write(tmp_path/'mnist.pkl.gz', data)
    with pytest.raises(DataFileError, match=msg): load_mnist(fn)

def test_wrong_ranges(tmp_path):
    tr = _split(50_000); tr[0][0, 0] = 255.
    with pytest.raises(DataFileError, match=r'pixels lie outside \[0, 1\)'):
        load_mnist(_write(tmp_path/'m.pkl.gz', (tr, _split(10_000), _split(10_000))))
    tr = _split(50_000); tr[1][3] = 10
    with pytest.raises(DataFileError, match=r'labels lie outside 0\.\.9'):
        load_mnist(_write(tmp_path/'m.pkl.gz', (tr, _split(10_000), _split(10_000))))

class _Server:
    "Serve `payload` on 127.0.0.1; with `drop`, promise it all but close after half"
    def __init__(self, payload, drop=False):
        outer = self
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                self.send_response(200)
                self.send_header('Content-Length', str(len(payload))); self.end_headers()
                self.wfile.write(payload[:len(payload)//2] if drop else payload)
                if drop: self.wfile.flush(); self.connection.shutdown(2)
            def log_message(self, *a): pass
        self.hits = 0
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/mnist.pkl.gz'
    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start(); return self
    def __exit__(self, *a): self.httpd.shutdown(); self.httpd.server_close()

def test_download_then_cached(mnist_dir, tmp_path, monkeypatch):
    payload = (mnist_dir/'mnist.pkl.gz').read_bytes()
    monkeypatch.setenv('MINIAI_DATA', str(tmp_path))
    with _Server(payload) as srv:
        (xt, yt), _, _ = get_mnist(url=srv.url)
        assert srv.hits == 1 and yt[:5].tolist() == [5, 0, 4, 1, 9]
        assert hashlib.sha256((tmp_path/'mnist.pkl.gz').read_bytes()).hexdigest() == hashlib.sha256(payload).hexdigest()
        get_mnist(url=srv.url)
        assert srv.hits == 1, 'the second call must use the file on disk'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['mnist.pkl.gz']

def test_dropped_connection_leaves_nothing(tmp_path):
    payload = os.urandom(3_000_000)
    with _Server(payload, drop=True) as srv:
        with pytest.raises(Exception, match=r'stopped after \d+ of 3000000 bytes; nothing was saved'):
            download(srv.url, tmp_path/'mnist.pkl.gz', chunk=1<<16, show=True)
    assert list(tmp_path.iterdir()) == []

def test_dropped_then_retry_succeeds(mnist_dir, tmp_path):
    payload = (mnist_dir/'mnist.pkl.gz').read_bytes()
    with _Server(payload, drop=True) as srv:
        with pytest.raises(Exception): get_mnist(tmp_path, url=srv.url)
    assert list(tmp_path.iterdir()) == []
    with _Server(payload) as srv: assert len(get_mnist(tmp_path, url=srv.url)[0][0]) == 50_000
