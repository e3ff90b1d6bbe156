// An aedes broker on 127.0.0.1:PORT over plain TCP (`net`), for bench/brokers.py.
//
//   node bench/aedes_broker.mjs --aedes bench/.node-aedes --port 1883 [--drain-timeout-ms 2000]
//
// aedes is a library, not a command: this is the smallest server around it, with
// aedes' defaults (in-memory persistence, concurrency 100) except `drainTimeout`,
// its stall timeout, which the harness sets like the other brokers'. Like the
// other brokers it says nothing about clients coming and going (aedes logs nothing
// itself; clients closed with RST at the end of a run would be 10,000 lines), and it
// stops on SIGTERM.
import net from 'node:net'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { pathToFileURL } from 'node:url'

const { values } = parseArgs({
  options: {
    aedes: { type: 'string' },
    port: { type: 'string' },
    'drain-timeout-ms': { type: 'string' }
  }
})
const entry = path.join(values.aedes, 'node_modules', 'aedes', 'aedes.js')
const { Aedes } = await import(pathToFileURL(entry).href)

const options = {}
if (values['drain-timeout-ms'] !== undefined) {
  options.drainTimeout = Number(values['drain-timeout-ms'])
}
const broker = await Aedes.createBroker(options)

const server = net.createServer(broker.handle)
server.listen(Number(values.port), '127.0.0.1')

function stop () {
  server.close()
  broker.close(() => process.exit(0))
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
