/**
 * ASGI websockets through Bun's server: the handshake runs the app until it accepts
 * (`server.upgrade` with its subprotocol and headers) or closes (403); then client frames
 * go to Python as casts (`ws_receive`, `ws_disconnect`) and the app's frames come back as
 * `bunpy.send("__bunpy_ws", [rid, kind, ...])` messages, in order.
 */
import type { ServerWebSocket, WebSocketHandler } from "bun";
import type { AppCaller } from "./inline.ts";
import { Context } from "./context.ts";
import { hubOf } from "./hub.ts";
import type { MainInterpreter } from "./main-interpreter.ts";

export interface WsData {
  bunpyRid: number;
}

/** The `data` of the sockets an app upgraded: a class of its own, so that sockets a JS
    route upgraded (whatever their `data`) are never taken for the app's. */
class AppSocketData implements WsData {
  constructor(readonly bunpyRid: number) {}
}

function ours(ws: ServerWebSocket<unknown>): Socket | undefined {
  const d = ws.data;
  return d instanceof AppSocketData ? sockets.get(d.bunpyRid) : undefined;
}

interface Socket {
  ctx: AppCaller;
  /** The context serving it (undefined: inline, the main interpreter): only its messages
      act on the socket. */
  owner: Context | undefined;
  ws?: ServerWebSocket<WsData>;
  pending: unknown[][];
  app: number;
  /** Client frames handed to Python, and how many of them the app took (Python says so
      every maxQueue/2 frames): reading pauses while maxQueue of them wait. */
  sent: number;
  taken: number;
  maxQueue: number;
  /** Frames to the client: the app's running total of the last frame Bun took, the total
      given back to Python, and whether Bun is backpressured (its drain gives it back). */
  outMark: number;
  outAcked: number;
  outBlocked: boolean;
}

/** Python's send() waits while a total this large was not given back (bunpy._asgi_ws
    _WS_OUT_HIGH, 1 MiB): it is given back at half of it. */
const OUT_ACK_EVERY = 1 << 19;

function ackOut(s: Socket): void {
  if (s.outMark <= s.outAcked) return;
  s.outAcked = s.outMark;
  s.ctx.cast("bunpy._asgi_ws", "ws_acked", [(s.ws!.data as WsData).bunpyRid, s.outMark]);
}

const sockets = new Map<number, Socket>();
const listening = new WeakSet<MainInterpreter>();

/** Acts on a message of the socket's own context: a frame, how many frames the app took,
    or the close. One Bun refuses (a frame that is not text or bytes, a bad close code:
    Python code can send anything) closes the socket with 1011, rather than throw. */
function deliver(s: Socket, m: unknown[]): void {
  const ws = s.ws!;
  try {
    if (m[1] === 0 || m[1] === 1) {
      const data = m[2];
      if (typeof data !== "string" && !(data instanceof Uint8Array)) throw new TypeError("a websocket frame is text or bytes");
      const r = ws.send(data);
      // 0: Bun dropped it (past its backpressureLimit): the app would not know
      if (r === 0) throw new Error("the frame was dropped");
      if (typeof m[3] === "number" && m[3] > s.outMark) s.outMark = m[3];
      if (r === -1) s.outBlocked = true;
      else if (!s.outBlocked && s.outMark - s.outAcked >= OUT_ACK_EVERY) ackOut(s);
    } else if (m[1] === 3) {
      if (typeof m[2] !== "number") throw new TypeError("a count of frames is a number");
      s.taken = m[2];
      if (s.sent - s.taken < s.maxQueue && ws.isPaused) ws.resume();
    } else ws.close(typeof m[2] === "number" ? m[2] : 1011, typeof m[3] === "string" ? m[3] : "");
  } catch {
    try {
      ws.close(1011, "bad message from the app, or a frame Bun dropped");
    } catch {
      // closed already
    }
  }
}

function listen(rt: MainInterpreter): void {
  if (listening.has(rt)) return;
  listening.add(rt);
  hubOf(rt).on("__bunpy_ws", (value, from) => {
    // any Python code can send here (this listener throwing would end the process with an
    // uncaught error): a message of another shape is dropped
    if (!Array.isArray(value) || typeof value[0] !== "number") return;
    const m = value as unknown[];
    const s = sockets.get(m[0] as number);
    // another context (a sandboxed one, say) naming this socket's id is not listened to
    if (s === undefined || from !== s.owner) return;
    if (s.ws === undefined) s.pending.push(m);
    else deliver(s, m);
  });
}

/** The `websocket` handlers to give Bun.serve next to `fetch` (shared by every app). */
export const websocketHandlers = {
  open(ws: ServerWebSocket<any>) {
    const s = ours(ws);
    if (s === undefined) return;
    s.ws = ws;
    for (const m of s.pending.splice(0)) deliver(s, m);
  },
  message(ws: ServerWebSocket<any>, message: string | Buffer) {
    const s = ours(ws);
    if (s === undefined) return;
    const rid = (ws.data as WsData).bunpyRid;
    if (typeof message === "string") s.ctx.cast("bunpy._asgi_ws", "ws_receive", [rid, message, null]);
    else s.ctx.cast("bunpy._asgi_ws", "ws_receive", [rid, null, new Uint8Array(message)]);
    // back-pressure: stop reading the socket while maxQueue frames wait for the app (Bun
    // still delivers the frames it read already; the client's TCP window fills up)
    if (++s.sent - s.taken >= s.maxQueue && !ws.isPaused) ws.pause();
  },
  drain(ws: ServerWebSocket<any>) {
    const s = ours(ws);
    if (s === undefined || !s.outBlocked) return;
    s.outBlocked = false;
    ackOut(s);
  },
  close(ws: ServerWebSocket<any>, code: number, reason: string) {
    const s = ours(ws);
    if (s === undefined) return;
    const rid = (ws.data as WsData).bunpyRid;
    sockets.delete(rid);
    s.ctx.cast("bunpy._asgi_ws", "ws_disconnect", [rid, code || 1005, reason ?? ""]);
  },
};

/** Handlers that serve the app's websockets and pass every other socket (those a JS route
    upgraded) to `js`: its open/message/close/drain/ping/pong/error, and its settings
    (maxPayloadLength, idleTimeout, backpressureLimit...), which apply to the whole server. */
export function sharedHandlers(js: WebSocketHandler<any>): WebSocketHandler<any> {
  if (js === null || typeof js !== "object") throw new TypeError("websocket: expected the JS websocket handlers object ({ open, message, close, ... })");
  for (const k of ["open", "message", "close", "drain", "ping", "pong", "error"] as const)
    if (js[k] !== undefined && typeof js[k] !== "function") throw new TypeError(`websocket.${k}: expected a function`);
  const out: WebSocketHandler<any> = {
    ...js,
    open(ws) {
      if (ours(ws) !== undefined) return websocketHandlers.open(ws);
      return js.open?.(ws);
    },
    message(ws, message) {
      if (ws.data instanceof AppSocketData) return websocketHandlers.message(ws, message);
      return js.message?.(ws, message);
    },
    close(ws, code, reason) {
      if (ws.data instanceof AppSocketData) return websocketHandlers.close(ws, code, reason);
      return js.close?.(ws, code, reason);
    },
  };
  for (const k of ["ping", "pong"] as const) {
    const f = js[k];
    if (f !== undefined) out[k] = (ws: ServerWebSocket<any>, data?: any) => (ws.data instanceof AppSocketData ? undefined : (f as (ws: ServerWebSocket<any>, d?: any) => void)(ws, data));
  }
  out.drain = (ws) => {
    if (ws.data instanceof AppSocketData) return websocketHandlers.drain(ws);
    return js.drain?.(ws);
  };
  return out;
}

export interface Upgrader {
  upgrade(req: Request, options: { data: unknown; headers?: [string, string][] }): boolean;
}

/** Runs the handshake; resolves to undefined once upgraded, or to a refusal Response. */
export async function handshake(
  rt: MainInterpreter, ctx: AppCaller, app: number, rid: number, req: Request, server: Upgrader,
  args: { target: string; headers: string[]; host: string | null; port: number | null; scheme: string; serverHost: string | null; serverPort: number | null; rootPath: string; maxQueue: number },
): Promise<Response | undefined> {
  listen(rt);
  const protocols = (req.headers.get("sec-websocket-protocol") ?? "").split(",").map((p) => p.trim()).filter(Boolean);
  const s: Socket = { ctx, owner: ctx instanceof Context ? ctx : undefined, pending: [], app, sent: 0, taken: 0, maxQueue: args.maxQueue, outMark: 0, outAcked: 0, outBlocked: false };
  sockets.set(rid, s);
  let r: [string, ...unknown[]];
  try {
    r = (await ctx.call("bunpy._asgi_ws", "ws_connect", [
      app, rid, args.target, args.headers, args.host, args.port, args.scheme, args.serverHost, args.serverPort, args.rootPath, protocols, args.maxQueue,
    ])) as [string, ...unknown[]];
  } catch (e) {
    sockets.delete(rid); // the context failed or closed: no socket will ever open
    throw e;
  }
  if (r[0] === "accept") {
    const headers: [string, string][] = [];
    const flat = r[2] as string[];
    for (let i = 0; i < flat.length; i += 2) headers.push([flat[i]!, flat[i + 1]!]);
    if (r[1] != null) headers.push(["Sec-WebSocket-Protocol", r[1] as string]);
    if (server.upgrade(req, { data: new AppSocketData(rid), headers })) return undefined;
    sockets.delete(rid);
    ctx.cast("bunpy._asgi_ws", "ws_disconnect", [rid, 1006, ""]);
    return new Response("WebSocket upgrade failed", { status: 400 });
  }
  sockets.delete(rid);
  if (r[0] === "deny") {
    // the denial-response extension: the app's own HTTP response instead of the upgrade
    const flat = r[2] as string[];
    const headers: [string, string][] = [];
    for (let i = 0; i < flat.length; i += 2) headers.push([flat[i]!, flat[i + 1]!]);
    return new Response(r[3] as Uint8Array, { status: r[1] as number, headers });
  }
  const status = r[1] as number;
  return new Response(status === 403 ? "Forbidden" : "Internal Server Error", { status });
}

/** Closes the open websockets of an app (close(): 1001 "going away"). */
export function closeSockets(app: number): void {
  for (const s of sockets.values()) if (s.app === app && s.ws !== undefined) s.ws.close(1001, "server shutting down");
}
