-- install_spec.lua -- farm as others get it: `make install PREFIX=...` into a
-- temporary prefix (files, soname links, farm.pc, the Lua module, farm(1)), a C
-- host built against that copy through pkg-config and run, `require "farm"`
-- from it, `make uninstall`, luarocks, and what libfarm.so exports.
local H = require "helper"

local quote = H.quote
local build = H.build
local asan = (os.getenv("FARM_ASAN_RT") or "") ~= ""

-- farm's version, which the Makefile sets (VERSION = x.y.z) and nothing else does
local VERSION
for line in io.lines("Makefile") do
  VERSION = VERSION or line:match("^VERSION%s*=%s*(%d+%.%d+%.%d+)%s*$")
end
assert(VERSION, "the Makefile sets VERSION")
local SOMAJOR = VERSION:match("^%d+")
local SONAME, SOFILE = "libfarm.so." .. SOMAJOR, "libfarm.so." .. VERSION

-- A command that must succeed; returns its standard output.
local function must(cmdline, timeout)
  local r = H.sh(cmdline, timeout)
  assert(r.code == 0, ("%s\nexit %s\n%s%s"):format(cmdline, tostring(r.code), r.out, r.err))
  return r.out
end

local function tool(cmdline, timeout) return must(H.tool(cmdline), timeout) end

local function exists(path) return H.sh(H.tool("test -e " .. quote(path))).code == 0 end
local function link_of(path)
  local r = H.sh(H.tool("readlink " .. quote(path)))
  return r.code == 0 and r.out:gsub("\n$", "") or nil
end

-- the files a prefix holds (and symlinks), relative to it, sorted
local function files_in(dir)
  local out = H.sh(H.tool("sh -c " .. quote("cd " .. quote(dir) .. " && find . -type f -o -type l | sort"))).out
  local list = {}
  for line in out:gmatch("[^\n]+") do list[#list + 1] = line:gsub("^%./", "") end
  return list
end

-- make TARGET for this build (B=), never rebuilding what the build made
-- (an ASan build's objects stay ASan's)
local function make(args)
  local keep = {}
  for _, f in ipairs { "farm", "farm.so", "libfarm.a", "libfarm.so", SONAME,
                       SOFILE, "libfarmkernels.a", "libfarmkernels.so" } do
    keep[#keep + 1] = "-o " .. quote(build .. "/" .. f)
  end
  return tool("make --no-print-directory B=" .. quote(build) .. " " .. table.concat(keep, " ")
    .. " " .. args, 300)
end

describe("make install", function()
  local prefix, work

  setup(function()
    prefix = tool("mktemp -d"):gsub("\n$", "")
    work = tool("mktemp -d"):gsub("\n$", "")
    make("install PREFIX=" .. quote(prefix))
  end)

  teardown(function()
    if prefix then H.sh(H.tool("rm -rf " .. quote(prefix) .. " " .. quote(work))) end
  end)

  it("installs the command, the libraries, the headers, farm.pc, the Lua module and farm(1)", function()
    local have = {}
    for _, f in ipairs(files_in(prefix)) do have[f] = true end
    for _, f in ipairs { "bin/farm", "lib/libfarm.a", "lib/" .. SOFILE, "lib/" .. SONAME,
                         "lib/libfarm.so", "include/farm.h", "lib/pkgconfig/farm.pc",
                         "lib/lua/5.4/farm.so", "share/man/man1/farm.1" } do
      assert.is_true(have[f] == true, f .. " is installed")
    end
    if exists(build .. "/libfarmkernels.so") then
      assert.is_true(have["lib/libfarmkernels.so"], "the kernel library is installed")
      assert.is_true(have["lib/libfarmkernels.a"], "the static kernel library is installed")
      assert.is_true(have["include/farm_kernels.h"], "the kernels' header is installed")
    end
    assert.are.equal(0, H.sh(H.tool("test -x " .. quote(prefix .. "/bin/farm"))).code)
  end)

  it("links libfarm.so -> libfarm.so.MAJOR -> libfarm.so.VERSION, the soname", function()
    assert.are.equal(SONAME, link_of(prefix .. "/lib/libfarm.so"))
    assert.are.equal(SOFILE, link_of(prefix .. "/lib/" .. SONAME))
    assert.is_nil(link_of(prefix .. "/lib/" .. SOFILE))
    local dyn = tool("readelf -d " .. quote(prefix .. "/lib/" .. SOFILE))
    assert.matches("Library soname: %[" .. SONAME:gsub("%p", "%%%0") .. "%]", dyn)
  end)

  it("says one version everywhere: the Makefile's", function()
    local said = {}
    local h = H.slurp(prefix .. "/include/farm.h")
    said["farm.h"] = h:match('#define FARM_VERSION "([^"]*)"')
    local env = "PKG_CONFIG_PATH=" .. quote(prefix .. "/lib/pkgconfig") .. " "
    said["farm.pc"] = tool(env .. "pkg-config --modversion farm"):gsub("\n$", "")
    said["farm --version"] = must(quote(prefix .. "/bin/farm") .. " --version"):match("^farm (%S+) ")
    said["farm._VERSION"] = must(("LUA_CPATH=%s lua5.4 -e 'io.write(require \"farm\"._VERSION)'")
      :format(quote(prefix .. "/lib/lua/5.4/?.so"))):match("^farm (%S+)$")
    -- the REPL's banner, shown on a terminal only: script(1) gives it one
    -- (script is uninstrumented: the ASan runtime stays out of it, as out of tmux
    -- in repl_spec; the farm executable of an ASan build links its own)
    local repl = must(("printf ':quit\\n' | env -u LD_PRELOAD -u FARM_HISTORY HOME=%s script -qec %s /dev/null")
      :format(quote(work), quote(quote(prefix .. "/bin/farm") .. " repl -n 1")), 60)
    said["farm(1)"] = H.slurp(prefix .. "/share/man/man1/farm.1"):match('\n%.TH FARM 1 "[^"]*" "farm ([^"]*)"')
    said["the REPL's banner"] = repl:match("farm (%S+) %(Lua [%d.]+%): 1 worker")
    for what, v in pairs(said) do assert.are.equal(VERSION, v, what) end
  end)

  it("farm.pc names the prefix, the version and the libraries", function()
    local env = "PKG_CONFIG_PATH=" .. quote(prefix .. "/lib/pkgconfig") .. " "
    assert.are.equal(VERSION .. "\n", tool(env .. "pkg-config --modversion farm"))
    local flags = tool(env .. "pkg-config --cflags --libs farm")
    assert.matches("-I" .. prefix:gsub("%p", "%%%0") .. "/include", flags)
    assert.matches("-L" .. prefix:gsub("%p", "%%%0") .. "/lib %-lfarm", flags)
    local static = tool(env .. "pkg-config --static --libs farm")
    for _, lib in ipairs { "-llua5.4", "-lnanomsg", "-lsodium", "-lpthread", "-ldl" } do
      assert.matches(lib:gsub("%p", "%%%0"), static)
    end
    -- libssh2 is loaded (dlopen) when a host is first started over SSH, not linked
    assert.is_nil(static:find("-lssh2", 1, true), static)
  end)

  it("builds examples/embed.c through pkg-config farm, and it runs", function()
    local env = "PKG_CONFIG_PATH=" .. quote(prefix .. "/lib/pkgconfig") .. " "
    local exe = work .. "/embed"
    tool(("cc -Wall -Werror examples/embed.c -o %s $(%spkg-config --cflags --libs farm)")
      :format(quote(exe), env))
    -- no FARM_EXE, no build directory on PATH: the workers are PREFIX/bin/farm
    local out = must(("env -u FARM_EXE PATH=/usr/bin:/bin LD_LIBRARY_PATH=%s %s 2")
      :format(quote(prefix .. "/lib"), quote(exe)), 120)
    assert.matches("pi is about 3%.14", out)
    assert.matches("Sum of primes below 100000 is 454396537\n", out)
    assert.matches("Sum of primes below 100700 is 460217613\n", out)
  end)

  it("links the C host statically with libfarm.a too", function()
    if asan then return pending("libfarm.a of an ASan build needs the ASan link") end
    local env = "PKG_CONFIG_PATH=" .. quote(prefix .. "/lib/pkgconfig") .. " "
    local exe = work .. "/embed_static"
    tool(("cc examples/embed.c -o %s $(%spkg-config --cflags farm) %s $(%spkg-config --static --libs farm | sed 's/-lfarm //')")
      :format(quote(exe), env, quote(prefix .. "/lib/libfarm.a"), env))
    assert.is_nil(tool("ldd " .. quote(exe)):find("libfarm", 1, true))
    local out = must(("FARM_EXE=%s %s 1"):format(quote(prefix .. "/bin/farm"), quote(exe)), 120)
    assert.matches("Sum of primes below 100000 is 454396537\n", out)
  end)

  it("farm.h is C89 (but for long long) and C++", function()
    local src = H.write(work .. "/h.c", '#include <farm.h>\nint main(void) { return farm_version() == 0; }\n')
    tool(("cc -std=c89 -pedantic-errors -Wall -Wextra -Werror -Wno-long-long -fsyntax-only -I%s %s")
      :format(quote(prefix .. "/include"), quote(src)))
    tool(("c++ -x c++ -std=c++98 -Wall -Werror -Wno-long-long -fsyntax-only -I%s %s")
      :format(quote(prefix .. "/include"), quote(src)))
  end)

  it("puts the Lua module where require finds it, and its jobs run", function()
    local script = H.write(work .. "/t.lua", [[
      local farm = require "farm"
      farm.config { workers = 2, echo = false }
      local t = farm.map(function(x) return x * x end, {1, 2, 3})
      print(package.searchpath("farm", package.cpath), t[3])
      farm.close()
    ]])
    local cpath = quote(prefix .. "/lib/lua/5.4/?.so")
    assert.are.equal("", must("LUA_CPATH=" .. cpath .. " lua5.4 -e 'require \"farm\"'"))
    local out = must(("env -u FARM_EXE PATH=/usr/bin:/bin LUA_CPATH=%s lua5.4 %s"):format(cpath, quote(script)), 60)
    assert.are.equal(prefix .. "/lib/lua/5.4/farm.so\t9\n", out)
  end)

  it("man -l renders farm(1)", function()
    local page = tool("MANWIDTH=80 man -l " .. quote(prefix .. "/share/man/man1/farm.1") .. " 2>&1")
    for _, s in ipairs { "FARM%(1%)", "farm%s+run%s+SCRIPT", "farm%s+node", "farm%s+keygen%s+FILE",
                         "farm%s+repl", "FARM_KEY_FILE", "%-%-hosts%s+LIST", "ENVIRONMENT" } do
      assert.matches(s, page)
    end
    local warnings = H.sh(H.tool("LC_ALL=C man --warnings -l " .. quote(prefix .. "/share/man/man1/farm.1")
      .. " 2>&1 >/dev/null"))
    assert.are.equal("", warnings.out)
  end)

  it("make uninstall removes every file it installed", function()
    make("uninstall PREFIX=" .. quote(prefix))
    assert.are.same({}, files_in(prefix))
    make("install PREFIX=" .. quote(prefix))     -- (again, for whatever runs after)
    make("uninstall PREFIX=" .. quote(prefix))
    assert.are.same({}, files_in(prefix))
  end)
end)

describe("libfarm.so", function()
  it("exports farm_* and luaopen_farm, nothing else", function()
    local syms = tool("nm -D --defined-only " .. quote(build .. "/libfarm.so"))
    local other = {}
    for line in syms:gmatch("[^\n]+") do
      local name = line:match("(%S+)$")
      if not (name:match("^farm_%l") or name == "luaopen_farm") then other[#other + 1] = name end
    end
    assert.are.same({}, other)
    assert.matches(" farm_open\n", syms)
    assert.matches(" farm_submit_source\n", syms)
    assert.matches(" luaopen_farm\n", syms)
  end)

  it("farm.so, the Lua module, exports luaopen_farm and no internals", function()
    local syms = tool("nm -D --defined-only " .. quote(build .. "/farm.so"))
    assert.matches(" luaopen_farm\n", syms)
    assert.is_nil(syms:find(" farm__", 1, true))
  end)

  it("examples/embed, built by make against it, runs", function()
    local out = must(H.quote(build .. "/examples/embed") .. " 2", 120)
    assert.matches("pi is about 3%.14", out)
    assert.matches("Sum of primes below 100000 is 454396537\n", out)
  end)
end)

describe("luarocks", function()
  it("luarocks make builds and installs a module that require finds", function()
    if asan then return pending("luarocks builds the plain build (build/)") end
    local tree = tool("mktemp -d"):gsub("\n$", "")
    local ok, err = pcall(function()
      tool(("luarocks --lua-version=5.4 make --tree=%s scripts/farm-dev-1.rockspec"):format(quote(tree)), 300)
      local cpath = quote(tree .. "/lib/lua/5.4/?.so")
      must("LUA_CPATH=" .. cpath .. " lua5.4 -e 'require \"farm\"'")
      assert.are.equal(0, H.sh(H.tool("test -x " .. quote(tree .. "/bin/farm"))).code)
      local script = H.tmp([[
        local farm = require "farm"
        farm.config { workers = 1, echo = false }
        print(farm.submit(function(a, b) return a + b end, 20, 22):result())
        farm.close()
      ]])
      local out = must(("env -u FARM_EXE PATH=/usr/bin:/bin LUA_CPATH=%s lua5.4 %s"):format(cpath, quote(script)), 60)
      assert.are.equal("42\n", out)
    end)
    H.sh(H.tool("rm -rf " .. quote(tree)))
    H.cleanup()
    assert(ok, err)
  end)
end)
