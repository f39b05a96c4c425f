// node_fetch.mjs -- baseline: N GETs with C async loops over Node's global
// fetch (undici, keep-alive by default), each reading the whole body.
// usage: node node_fetch.mjs URL N C; prints "requests N ok N seconds S rps R".
const [url, nArg, cArg] = process.argv.slice(2);
const n = Number(nArg), c = Number(cArg);
if (!url || !(n > 0) || !(c > 0)) {
  console.error("usage: node_fetch.mjs URL N C");
  process.exit(2);
}
let started = 0, ok = 0;
async function loop() {
  while (started < n) {
    started++;
    try {
      const res = await fetch(url);
      await res.arrayBuffer();
      if (res.status === 200) ok++;
    } catch (e) {
      // counted as not ok
    }
  }
}
const t0 = process.hrtime.bigint();
await Promise.all(Array.from({ length: Math.min(c, n) }, loop));
const s = Number(process.hrtime.bigint() - t0) / 1e9;
console.log(`requests ${n} ok ${ok} seconds ${s.toFixed(3)} rps ${Math.round(n / s)}`);
process.exit(ok === n ? 0 : 1);
