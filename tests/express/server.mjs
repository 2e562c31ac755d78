// A real Express upstream for the gateway's authorization tests, on 127.0.0.1 only.
// Prints `listening PORT` once it accepts connections. Express matches routes
// case-insensitively by default (`case sensitive routing` off), as deployed apps do.
import express from 'express';

const app = express();

app.get('/admin/secret', (req, res) => {
  res.type('text/plain').send('express: the admin secret');
});

// Everything else: what arrived, for the tests' diagnostics.
app.use((req, res) => {
  res.status(404).json({ method: req.method, url: req.originalUrl, headers: req.headers });
});

const server = app.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
