/*
 * classcache capture agent: records the bytes of every class that another Java agent
 * transformed while it was loaded, so they can be woven into copies of their jars.
 *
 * Usage: -javaagent:<apm-agent.jar> -javaagent:capture-agent.jar=<output dir>
 * It must come after the agent it watches: its transformer is registered last among the
 * retransformation-capable ones, so it sees each class's final bytes.
 *
 * Output: <dir>/classes/<n>.class, <dir>/index.tsv (jar path, entry name, file), and
 * <dir>/unbaked.tsv (class name, reason) for transformed classes that cannot be woven.
 */
package dev.classcache.capture;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.lang.instrument.ClassFileTransformer;
import java.lang.instrument.Instrumentation;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardOpenOption;
import java.security.CodeSource;
import java.security.ProtectionDomain;
import java.util.Arrays;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.jar.JarEntry;
import java.util.jar.JarFile;
import java.util.zip.ZipFile;

public final class CaptureAgent {
  private CaptureAgent() {}

  public static void premain(String args, Instrumentation inst) throws IOException {
    Path out = Paths.get(args);
    Files.createDirectories(out.resolve("classes"));
    inst.addTransformer(new Capture(out), true);
  }

  static final class Capture implements ClassFileTransformer {
    private final Path out;
    private final AtomicInteger next = new AtomicInteger();
    private final Map<String, JarFile> jars = new ConcurrentHashMap<>();

    Capture(Path out) {
      this.out = out;
    }

    private static final ThreadLocal<Boolean> busy = new ThreadLocal<>();

    @Override
    public byte[] transform(Module module, ClassLoader loader, String name, Class<?> redefined, ProtectionDomain pd, byte[] bytes) {
      if (name == null || busy.get() != null) return null; // hidden classes; our own lookups
      busy.set(Boolean.TRUE);
      try {
        if (loader == null) {
          checkBootClass(module, name, bytes);
          return null;
        }
        return capture(loader, name, redefined, pd, bytes);
      } finally {
        busy.remove();
      }
    }

    /** A JDK class an agent transformed cannot be woven into a jar: say so. */
    private void checkBootClass(Module module, String name, byte[] bytes) {
      if (module == null || !module.isNamed()) return; // the agent's own jar on the boot class path
      try (InputStream in = module.getResourceAsStream(name + ".class")) {
        if (in != null && !Arrays.equals(in.readAllBytes(), bytes)) {
          line("unbaked.tsv", name + "\tJDK class (" + module.getName() + ") transformed by the agent");
        }
      } catch (Throwable ignored) {
        // best effort
      }
    }

    private byte[] capture(ClassLoader loader, String name, Class<?> redefined, ProtectionDomain pd, byte[] bytes) {
      try {
        String jar = jarOf(pd);
        if (jar == null) {
          return null; // defined at run time (proxies, generated code): nothing to compare with
        }
        JarEntry entry = entry(jar, name + ".class");
        if (entry == null) return null; // generated at run time (proxies): never archivable anyway
        if (Arrays.equals(read(jar, entry), bytes)) return null;
        if (redefined != null) {
          line("unbaked.tsv", name + "\tretransformed after it was loaded");
          return null;
        }
        String file = next.incrementAndGet() + ".class";
        Files.write(out.resolve("classes").resolve(file), bytes);
        // The real name: in a multi-release jar the JVM may have loaded META-INF/versions/N/…
        line("index.tsv", jar + "\t" + entry.getRealName() + "\t" + file);
      } catch (Throwable t) {
        try {
          line("unbaked.tsv", name + "\tcapture failed: " + t);
        } catch (IOException ignored) {
          // nothing more we can do
        }
      }
      return null;
    }

    private static String jarOf(ProtectionDomain pd) throws Exception {
      CodeSource cs = pd == null ? null : pd.getCodeSource();
      URL loc = cs == null ? null : cs.getLocation();
      if (loc == null || !"file".equals(loc.getProtocol()) || !loc.getPath().endsWith(".jar")) return null;
      return Paths.get(loc.toURI()).toString();
    }

    /** Opens jars as the class loader does: multi-release, for the running JDK's version. */
    private JarFile jar(String path) throws IOException {
      JarFile jf = jars.get(path);
      if (jf == null) {
        jf = new JarFile(new File(path), false, ZipFile.OPEN_READ, Runtime.version());
        JarFile prev = jars.putIfAbsent(path, jf);
        if (prev != null) {
          jf.close();
          jf = prev;
        }
      }
      return jf;
    }

    private JarEntry entry(String path, String name) throws IOException {
      return jar(path).getJarEntry(name);
    }

    private byte[] read(String path, JarEntry e) throws IOException {
      try (InputStream in = jar(path).getInputStream(e)) {
        return in.readAllBytes();
      }
    }

    private synchronized void line(String file, String text) throws IOException {
      Files.write(out.resolve(file), (text + "\n").getBytes(StandardCharsets.UTF_8),
          StandardOpenOption.CREATE, StandardOpenOption.APPEND);
    }
  }
}
