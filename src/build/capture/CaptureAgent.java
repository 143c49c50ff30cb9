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
import java.util.jar.JarFile;
import java.util.zip.ZipEntry;

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

    @Override
    public byte[] transform(ClassLoader loader, String name, Class<?> redefined, ProtectionDomain pd, byte[] bytes) {
      if (name == null || loader == null) return null; // hidden classes; boot classes cannot be woven into app jars
      try {
        String jar = jarOf(pd);
        if (jar == null) {
          return null; // defined at run time (proxies, generated code): nothing to compare with
        }
        byte[] original = read(jar, name + ".class");
        if (original == null) {
          line("unbaked.tsv", name + "\tnot in " + jar);
          return null;
        }
        if (Arrays.equals(original, bytes)) return null;
        if (redefined != null) {
          line("unbaked.tsv", name + "\tretransformed after it was loaded");
          return null;
        }
        String file = next.incrementAndGet() + ".class";
        Files.write(out.resolve("classes").resolve(file), bytes);
        line("index.tsv", jar + "\t" + name + ".class\t" + file);
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

    private byte[] read(String jar, String entry) throws IOException {
      JarFile jf = jars.get(jar);
      if (jf == null) {
        jf = new JarFile(jar, false);
        JarFile prev = jars.putIfAbsent(jar, jf);
        if (prev != null) {
          jf.close();
          jf = prev;
        }
      }
      ZipEntry e = jf.getEntry(entry);
      if (e == null) return null;
      try (InputStream in = jf.getInputStream(e)) {
        return in.readAllBytes();
      }
    }

    private synchronized void line(String file, String text) throws IOException {
      Files.write(out.resolve(file), (text + "\n").getBytes(StandardCharsets.UTF_8),
          StandardOpenOption.CREATE, StandardOpenOption.APPEND);
    }
  }
}
