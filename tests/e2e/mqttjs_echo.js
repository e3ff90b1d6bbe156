// MQTT.js (the npm package `mqtt`, as browsers use it) against mqttish over WebSocket.
//
//   node tests/e2e/mqttjs_echo.js ws://127.0.0.1:PORT/mqtt PROTOCOL_VERSION
//
// Connects, subscribes to mqttjs/in at QoS 1, prints "ready", then answers the first
// message on mqttjs/in by publishing "echo:<payload>" to mqttjs/out at QoS 1, prints
// "done" and disconnects. Gives up after 10 seconds (exit code 1), so a test never hangs.
"use strict";

const mqtt = require("mqtt");

const [url, version] = process.argv.slice(2);
const timer = setTimeout(() => {
  console.log("timeout");
  process.exit(1);
}, 10000);

const client = mqtt.connect(url, {
  protocolVersion: Number(version || 4),
  clientId: `mqttjs-${version}`,
  reconnectPeriod: 0,
});

client.on("error", (error) => {
  console.log(`error ${error.message}`);
  process.exit(1);
});

client.on("connect", () => {
  client.subscribe("mqttjs/in", { qos: 1 }, (error, granted) => {
    if (error) throw error;
    console.log(`ready ${granted[0].qos}`);
  });
});

client.on("message", (topic, payload) => {
  client.publish("mqttjs/out", `echo:${payload}`, { qos: 1 }, (error) => {
    if (error) throw error;
    console.log("done");
    client.end(false, {}, () => {
      clearTimeout(timer);
      process.exit(0);
    });
  });
});
