/*
 * napi-env.c — not part of the shim: bun:ffi's cc() compiles it (TinyCC) on each Bun Worker
 * that uses Python, because bun:ffi hands a thread's napi_env only to functions compiled by
 * cc() (dlopen refuses the argument type). It returns that env, which the shim's
 * bp_port_watch_env then uses to close the Worker's port from the VM's cleanup hooks.
 * The env is owned by the Worker's global object and lives as long as its VM.
 */
void *bp_napi_env(void *env) { return env; }
