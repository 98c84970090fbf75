// Builds the bunpy shim (shim/*.c) into a shared library for one CPython minor version.
//
//   zig build -Dpy-include=DIR [-Dtarget=x86_64-linux-gnu.2.17]
//
// The library does not link libpython: its Python symbols stay undefined and are resolved
// against the libpython bunpy loads (RTLD_GLOBAL) before it loads the shim, so one build
// serves every CPython with the same minor version and ABI (like a wheel's extension
// module). src/build.ts runs this once per Python when no prebuilt shim fits;
// scripts/prebuild.ts builds the prebuilt ones. Written for zig 0.11 (the one on npm) and
// newer: APIs that changed are picked by zig version at comptime.
const std = @import("std");
const builtin = @import("builtin");

const new_api = builtin.zig_version.order(std.SemanticVersion.parse("0.12.0") catch unreachable) != .lt;

const sources = [_][]const u8{
    "shim/runtime.c",
    "shim/io.c",
    "shim/decode.c",
    "shim/encode.c",
    "shim/errors.c",
    "shim/ops.c",
    "shim/methods.c",
    "shim/module.c",
    "shim/jserror.c",
    "shim/reactor.c",
    "shim/timers.c",
    "shim/handles.c",
    "shim/loopcalls.c",
    "shim/loop.c",
    "shim/transport.c",
    "shim/transmit.c",
    "shim/connect.c",
    "shim/accept.c",
    "shim/echofloor.c",
    "shim/bench.c",
    "shim/buffers.c",
    "shim/shared.c",
    "shim/context.c",
    "shim/relay.c",
    "shim/ring.c",
    "shim/serve.c",
    "shim/wait.c",
    "shim/request.c",
    "shim/jscall.c",
    "shim/sandbox.c",
    "shim/seccomp.c",
    "shim/landlock.c",
    "shim/fdtable.c",
    "shim/bell.c",
    "shim/wakefd.c",
    "shim/memcap.c",
};

const host_sources = [_][]const u8{"shim/host.c"};

// Fact 7 in docs/architecture.md: without -fno-sanitize=undefined zig traps on UB checks in C.
const cflags = [_][]const u8{
    "-std=c11",
    "-D_GNU_SOURCE",
    "-fno-sanitize=undefined",
    "-fvisibility=hidden",
    "-fno-strict-aliasing",
    "-Wall",
    "-Wno-unused-function",
};

fn lazyPath(b: *std.Build, path: []const u8) std.Build.LazyPath {
    _ = b;
    if (comptime new_api) return .{ .cwd_relative = path };
    return .{ .path = path };
}

pub fn build(b: *std.Build) void {
    const target = b.standardTargetOptions(.{});
    const optimize = b.standardOptimizeOption(.{ .preferred_optimize_mode = .ReleaseFast });
    const py_include = b.option([]const u8, "py-include", "Python include directory (sysconfig 'include')") orelse
        @panic("missing -Dpy-include");

    const lib = if (comptime new_api)
        b.addSharedLibrary(.{ .name = "bunpy", .target = target, .optimize = optimize, .link_libc = true })
    else
        b.addSharedLibrary(.{ .name = "bunpy", .target = target, .optimize = optimize });

    if (comptime new_api) {
        lib.addCSourceFiles(.{ .files = &sources, .flags = &cflags });
    } else {
        lib.addCSourceFiles(&sources, &cflags);
        lib.linkLibC();
    }
    // -Dstrip=true drops debug info (prebuilt shims: ~3x smaller).
    const strip = b.option(bool, "strip", "strip debug info") orelse false;
    if (strip) {
        if (comptime new_api) lib.root_module.strip = true else lib.strip = true;
    }
    lib.addIncludePath(lazyPath(b, py_include));
    // Python's symbols come from the libpython already loaded globally (no DT_NEEDED on it).
    lib.linker_allow_shlib_undefined = true;
    b.installArtifact(lib);

    // bunpy-host: the executable a process context runs Python in (shim/host.c). It links
    // no libpython either (it dlopens it), and is installed next to libbunpy.so.
    const host = if (comptime new_api)
        b.addExecutable(.{ .name = "bunpy-host", .target = target, .optimize = optimize, .link_libc = true })
    else
        b.addExecutable(.{ .name = "bunpy-host", .target = target, .optimize = optimize });
    if (comptime new_api) {
        host.addCSourceFiles(.{ .files = &host_sources, .flags = &cflags });
    } else {
        host.addCSourceFiles(&host_sources, &cflags);
        host.linkLibC();
    }
    if (strip) {
        if (comptime new_api) host.root_module.strip = true else host.strip = true;
    }
    const install_host = b.addInstallArtifact(host, .{ .dest_dir = .{ .override = .lib } });
    b.getInstallStep().dependOn(&install_host.step);
}
