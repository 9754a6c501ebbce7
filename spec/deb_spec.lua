-- deb_spec.lua -- farm as a Debian user gets it: `make deb` builds
-- build/farm_VERSION_ARCH.deb, `dpkg -i` installs it on this machine, and then,
-- from a scratch directory and with nothing of the checkout in the environment:
-- /usr/bin/farm runs examples/pi.lua, examples/embed.c builds through
-- `pkg-config farm` against the installed files and runs, and lua5.4 finds the
-- module by its own package.cpath. Last `dpkg --purge farm`, and every path the
-- package listed (dpkg -L), and each directory it made, is gone.
--
-- It changes the machine, so it needs root (CI runs it as root), and it leaves
-- the machine as it found it: it refuses to run, with one line saying why, when a
-- farm package is installed already or a file of the package is on disk (a
-- `make install PREFIX=/usr`), and it purges the package it installed even when a
-- test fails. The package is made from the plain build: under the sanitizers
-- (FARM_ASAN_RT) it is pending.
local H = require "helper"

local quote = H.quote
local asan = (os.getenv("FARM_ASAN_RT") or "") ~= ""
local root = H.sh("id -u").out == "0\n"

local VERSION
for line in io.lines("Makefile") do
  VERSION = VERSION or line:match("^VERSION%s*=%s*(%d+%.%d+%.%d+)%s*$")
end
assert(VERSION, "the Makefile sets VERSION")
local SONAME = "libfarm.so." .. VERSION:match("^%d+")

-- a shell command line that must succeed (without the ASan runtime); its output
local function must(cmdline, timeout)
  local r = H.sh(H.tool("sh -c " .. quote(cmdline)), timeout)
  assert(r.code == 0, ("%s\nexit %s\n%s%s"):format(cmdline, tostring(r.code), r.out, r.err))
  return r.out
end
local function chomp(s) return (s:gsub("\n$", "")) end
local function exists(path) return H.sh("test -e " .. quote(path) .. " || test -L " .. quote(path)).code == 0 end
local function isdir(path) return H.sh("test -d " .. quote(path)).code == 0 end

-- dpkg ARGS, waiting (up to two minutes) while another dpkg or apt holds the lock
local function dpkg(args)
  local r
  for _ = 1, 120 do
    r = H.sh(H.tool("dpkg " .. args), 300)
    if r.code == 0 or not r.err:find("lock", 1, true) then break end
    H.sleep(1)
  end
  assert(r.code == 0, ("dpkg %s\nexit %s\n%s%s"):format(args, tostring(r.code), r.out, r.err))
  return r.out
end

-- is a package named farm known to dpkg (installed, or its configuration left)?
local function farm_known()
  local r = H.sh("dpkg-query -W -f='${Status}' farm 2>/dev/null")
  return r.code == 0 and not r.out:find("not-installed", 1, true), r.out
end

-- the lines of s, without the directory "/."
local function paths(s)
  local list = {}
  for line in s:gmatch("[^\n]+") do if line ~= "/." then list[#list + 1] = line end end
  return list
end

describe("the Debian package", function()
  local ARCH, MA, deb, work
  local installed = false       -- by this spec: what teardown purges
  local listed = {}             -- dpkg -L farm, while it was installed
  local new_dirs = {}           -- the package's directories that were not there before

  local function purge()
    if installed then
      dpkg("--purge farm")
      installed = false
    end
  end

  setup(function()
    if asan or not root then return end
    local ok, err = pcall(function()
      ARCH = chomp(must("dpkg --print-architecture"))
      MA = chomp(must("dpkg-architecture -qDEB_HOST_MULTIARCH"))
      local known, status = farm_known()
      assert(not known, ("a package named farm is on this machine already (dpkg status: %s): "
        .. "deb_spec installs and purges its own; remove that one first (dpkg --purge farm)"):format(status))
      must("make --no-print-directory B=" .. quote(H.build) .. " deb", 600)
      deb = H.build .. "/farm_" .. VERSION .. "_" .. ARCH .. ".deb"
      assert(exists(deb), deb .. " was built")
      -- what the package holds: none of its files may be here already (dpkg -i would
      -- take them over and --purge delete them); note its directories that are not
      local contents = must("dpkg-deb --fsys-tarfile " .. quote(deb) .. " | tar -t")
      for p in contents:gmatch("[^\n]+") do
        local path = p:gsub("^%.", ""):gsub("/$", "")
        if path ~= "" then
          if p:sub(-1) == "/" then
            if not isdir(path) then new_dirs[#new_dirs + 1] = path end
          else
            assert(not exists(path), ("%s is on this machine already (a make install PREFIX=/usr?): "
              .. "deb_spec would take it over; remove it first"):format(path))
          end
        end
      end
      work = chomp(must("mktemp -d"))
      installed = true        -- (from here on: a half-done dpkg -i is purged too)
      dpkg("-i " .. quote(deb))
      listed = paths(must("dpkg -L farm"))
    end)
    if not ok then
      pcall(purge)
      error(err, 0)
    end
  end)

  teardown(function()
    local ok, err = pcall(purge)
    if work then H.sh("rm -rf " .. quote(work)) end
    assert(ok, err)
  end)

  local function need()
    if asan then pending("the package is made from the plain build (build/), not build-asan") return false end
    if not root then pending("dpkg -i needs root (CI runs this spec as root)") return false end
    return true
  end

  it("puts farm's files where Debian looks for them, with the Depends of its binaries", function()
    if not need() then return end
    local have = {}
    for _, p in ipairs(listed) do have[p] = true end
    local lib = "/usr/lib/" .. MA
    for _, p in ipairs { "/usr/bin/farm", lib .. "/" .. SONAME, lib .. "/libfarm.so",
                         lib .. "/libfarm.so." .. VERSION, lib .. "/libfarmkernels.so",
                         "/usr/include/farm.h", "/usr/include/farm_kernels.h",
                         lib .. "/pkgconfig/farm.pc", lib .. "/lua/5.4/farm.so",
                         "/usr/share/man/man1/farm.1.gz", "/lib/systemd/system/farm-node.service",
                         "/usr/share/doc/farm/copyright", "/usr/share/doc/farm/changelog.gz" } do
      assert.is_true(have[p] == true, p .. " is in the package")
    end
    -- the soname, known to the dynamic linker (the ldconfig trigger ran)
    assert.matches("Library soname: %[" .. SONAME:gsub("%p", "%%%0") .. "%]",
      must("readelf -d " .. quote(lib .. "/libfarm.so." .. VERSION)))
    -- (/lib is /usr/lib here, and ldconfig may name either)
    local cached = must("/sbin/ldconfig -p"):match("\n%s*(" .. SONAME:gsub("%p", "%%%0") .. " [^\n]*)")
    assert.matches("=> [%w/]*/" .. MA:gsub("%p", "%%%0") .. "/" .. SONAME:gsub("%p", "%%%0") .. "$", cached or "(none)")
    -- stripped: no debugging sections left in the command or the libraries
    for _, p in ipairs { "/usr/bin/farm", lib .. "/libfarm.so." .. VERSION, lib .. "/lua/5.4/farm.so" } do
      assert.is_nil(must("readelf -S " .. quote(p)):find(".debug_info", 1, true), p .. " is stripped")
    end
    -- Depends: what the binaries link, and what farm loads with dlopen
    local depends = must("dpkg-query -W -f='${Depends}' farm")
    for _, d in ipairs { "libc6", "liblua5.4%-0", "libnanomsg5", "libsodium23", "libssh2%-1", "libedit2",
                         "libmicrohttpd12" } do
      assert.matches("%f[%w]" .. d .. "[%s,(]", depends .. ",")
    end
    -- the unit starts the packaged farm; the man page is farm's
    assert.matches("\nExecStart=/usr/bin/farm node ", H.slurp("/lib/systemd/system/farm-node.service"))
    assert.are.equal("/usr/share/man/man1/farm.1.gz\n", must("man -w farm"))
    assert.are.equal("farm " .. VERSION, must("/usr/bin/farm --version"):match("^farm %S+"))
  end)

  it("lintian finds no errors in it", function()
    if not need() then return end
    local r = H.sh(H.tool("lintian --fail-on error " .. quote(deb)), 300)
    assert(r.code == 0, "lintian:\n" .. r.out .. r.err)
    assert.is_nil(r.out:find("\nE: ") or r.out:find("^E: "), r.out)
  end)

  it("runs examples/pi.lua with /usr/bin/farm from another directory", function()
    if not need() then return end
    local script = H.abs("examples/pi.lua")
    local out = must(("cd %s && env -u FARM_EXE -u LUA_CPATH -u LUA_PATH PATH=/usr/bin:/bin farm run %s 8 20000")
      :format(quote(work), quote(script)), 120)
    assert.matches("^pi = 3%.1%d+ %(error [^)]*%) from 160000 points in 8 jobs on %d+ workers\n$", out)
  end)

  it("builds examples/embed.c with pkg-config farm against the installed files, and it runs", function()
    if not need() then return end
    assert.are.equal("/usr/lib/" .. MA .. "\n", must("env -u PKG_CONFIG_PATH pkg-config --variable=libdir farm"))
    assert.are.equal(VERSION .. "\n", must("env -u PKG_CONFIG_PATH pkg-config --modversion farm"))
    local exe = work .. "/embed"
    must(("cd %s && cc -Wall -Werror %s -o %s $(env -u PKG_CONFIG_PATH pkg-config --cflags --libs farm)")
      :format(quote(work), quote(H.abs("examples/embed.c")), quote(exe)), 120)
    assert.matches(SONAME:gsub("%p", "%%%0") .. " => [%w/]*/" .. MA:gsub("%p", "%%%0") .. "/" .. SONAME:gsub("%p", "%%%0"),
      must("ldd " .. quote(exe)))
    local out = must(("cd %s && env -u FARM_EXE -u LD_LIBRARY_PATH PATH=/usr/bin:/bin %s 2")
      :format(quote(work), quote(exe)), 120)
    assert.matches("pi is about 3%.14", out)
    assert.matches("Sum of primes below 100000 is 454396537\n", out)
  end)

  it("lua5.4 finds the module by its own package.cpath, and its jobs run", function()
    if not need() then return end
    local script = H.write(work .. "/t.lua", [[
      local farm = require "farm"
      farm.config { workers = 2, echo = false }
      local t = farm.map(function(x) return x * x end, {1, 2, 3})
      print(package.searchpath("farm", package.cpath), t[3], farm._VERSION)
      farm.close()
    ]])
    local env = "env -u FARM_EXE -u LUA_CPATH -u LUA_PATH -u LUA_CPATH_5_4 -u LUA_PATH_5_4 PATH=/usr/bin:/bin "
    assert.are.equal("", must(("cd %s && %slua5.4 -e 'require \"farm\"'"):format(quote(work), env)))
    local out = must(("cd %s && %slua5.4 %s"):format(quote(work), env, quote(script)), 60)
    assert.are.equal("/usr/lib/" .. MA .. "/lua/5.4/farm.so\t9\tfarm " .. VERSION .. "\n", out)
  end)

  it("dpkg --purge farm leaves nothing behind", function()
    if not need() then return end
    assert.is_true(#listed > 10, "dpkg -L farm listed the package's paths")
    dpkg("-r farm")
    dpkg("--purge farm")
    installed = false
    assert.is_false((farm_known()))
    local left = {}
    for _, p in ipairs(listed) do
      if not isdir(p) and exists(p) then left[#left + 1] = p end
    end
    for _, d in ipairs(new_dirs) do
      if exists(d) then left[#left + 1] = d .. "/" end
    end
    assert.are.same({}, left)
    assert.is_nil(must("/sbin/ldconfig -p"):find("libfarm", 1, true), "ldconfig forgot libfarm")
  end)
end)
