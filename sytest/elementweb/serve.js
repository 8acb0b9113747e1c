// Serves a built Element Web (EW_ROOT) on 127.0.0.1:PORT (default 8080) and
// passes /_matrix/* on the same origin to Haven (HS_PORT, default 8008).
// Element's config.json (and the config.HOST.json it asks for first) is the
// one beside this file (EW_CONFIG names another), not the webapp's own.
// See e2e.js.
const http = require('http');
const fs = require('fs');
const path = require('path');

const root = path.resolve(process.env.EW_ROOT || '.');
const config = path.resolve(process.env.EW_CONFIG || path.join(__dirname, 'config.json'));
const hs = { host: '127.0.0.1', port: +(process.env.HS_PORT || 8008) };
const types = {
  '.html': 'text/html', '.js': 'application/javascript', '.css': 'text/css', '.json': 'application/json',
  '.wasm': 'application/wasm', '.svg': 'image/svg+xml', '.png': 'image/png', '.woff2': 'font/woff2', '.woff': 'font/woff', '.ttf': 'font/ttf',
};

http.createServer((req, res) => {
  if (req.url.startsWith('/_matrix/')) {
    const up = http.request({ ...hs, method: req.method, path: req.url, headers: { ...req.headers, host: `${hs.host}:${hs.port}` } }, r => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    up.on('error', e => { res.writeHead(502); res.end(String(e)); });
    req.pipe(up);
    return;
  }
  const p = decodeURIComponent(req.url.split('?')[0]);
  let f = /^\/config(\.[^/]+)?\.json$/.test(p) ? config : path.join(root, p);
  if (f !== config && !f.startsWith(root)) { res.writeHead(403); res.end(); return; }
  if (fs.existsSync(f) && fs.statSync(f).isDirectory()) f = path.join(f, 'index.html');
  fs.readFile(f, (err, data) => {
    if (err) { res.writeHead(404); res.end('not found'); return; }
    res.writeHead(200, { 'content-type': types[path.extname(f)] || 'application/octet-stream' });
    res.end(data);
  });
}).listen(+(process.env.PORT || 8080), '127.0.0.1', () => console.log('serving', root, 'with', config));
