import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { loadConfig } from '../src/config.js';

/**
 * The deployment files agree with the service: every environment variable they
 * set is one src/config.ts reads and accepts, the grace periods outlast
 * SHUTDOWN_TIMEOUT_MS, the pool size matches the CPU request, the probes and
 * ports point at what exists; and the README documents exactly the variables
 * that src/config.ts reads.
 */
const root = fileURLToPath(new URL('../', import.meta.url));
const read = (path: string) => readFileSync(`${root}${path}`, 'utf8');

// biome-ignore lint/suspicious/noExplicitAny: manifests are read as plain data.
type Doc = any;
function docs(path: string): Doc[] {
  return parseAllDocuments(read(path)).map((d) => {
    expect(d.errors, path).toEqual([]);
    return d.toJS();
  });
}

/** The variable names of src/config.ts's schema. */
const configNames = [...read('src/config.ts').matchAll(/^ {2}([A-Z][A-Z0-9_]+): /gm)].map((m) => m[1]!);

const seconds = (v: string) => {
  const m = /^(\d+)(ms|s|m)$/.exec(v);
  expect(m, v).not.toBeNull();
  return Number(m![1]) * { ms: 0.001, s: 1, m: 60 }[m![2] as 'ms' | 's' | 'm'];
};

describe('deploy/kubernetes', () => {
  const deployment = docs('deploy/kubernetes/deployment.yaml')[0];
  const service = docs('deploy/kubernetes/service.yaml')[0];
  const hpa = docs('deploy/kubernetes/hpa.yaml')[0];
  const pod = deployment.spec.template.spec;
  const container = pod.containers[0];
  const env: Record<string, string> = Object.fromEntries(
    container.env.filter((e: Doc) => 'value' in e).map((e: Doc) => [e.name, e.value]),
  );

  it('sets only variables that src/config.ts reads, with values it accepts', () => {
    expect(configNames.length).toBeGreaterThan(10);
    for (const e of container.env) expect(configNames, e.name).toContain(e.name);
    const config = loadConfig(env);
    expect(config.host).toBe('0.0.0.0');
    expect(config.port).toBe(container.ports[0].containerPort);
  });

  it('sizes the pool to the CPU request and keeps MAX_RSS_BYTES under the memory limit', () => {
    const config = loadConfig(env);
    expect(String(container.resources.requests.cpu)).toBe(String(config.workers));
    expect(container.resources.limits.memory).toBe('3Gi');
    expect(config.pressure.maxRssBytes).toBeGreaterThan(0);
    expect(config.pressure.maxRssBytes).toBeLessThan(3 * 2 ** 30);
  });

  it('gives the graceful shutdown more time than SHUTDOWN_TIMEOUT_MS plus the preStop sleep', () => {
    const config = loadConfig(env);
    const preStop = Number(container.lifecycle.preStop.exec.command[1]);
    expect(pod.terminationGracePeriodSeconds * 1000).toBeGreaterThan(
      config.shutdownTimeoutMs + preStop * 1000,
    );
  });

  it('probes /health (liveness) and /ready (readiness) on the named port', () => {
    expect(container.livenessProbe.httpGet).toEqual({ path: '/health', port: 'http' });
    expect(container.readinessProbe.httpGet).toEqual({ path: '/ready', port: 'http' });
    expect(container.ports[0].name).toBe('http');
  });

  it('runs as a non-root user without privileges', () => {
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(container.securityContext.allowPrivilegeEscalation).toBe(false);
    expect(container.securityContext.capabilities.drop).toEqual(['ALL']);
  });

  it('the Service and the HPA point at the Deployment', () => {
    expect(service.spec.selector).toEqual(deployment.spec.selector.matchLabels);
    expect(deployment.spec.template.metadata.labels).toMatchObject(deployment.spec.selector.matchLabels);
    expect(service.spec.ports[0].targetPort).toBe('http');
    expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: 'normserve' });
    expect(hpa.spec.metrics[0].resource.name).toBe('cpu');
  });
});

describe('docker-compose.yml', () => {
  const compose = docs('docker-compose.yml')[0];
  const svc = compose.services.normserve;
  const env: Record<string, string> = { ...svc.environment, API_KEYS: '' };

  it('sets only variables that src/config.ts reads, with values it accepts', () => {
    for (const name of Object.keys(svc.environment)) expect(configNames, name).toContain(name);
    expect(loadConfig(env).port).toBe(3000);
  });

  it('waits longer than SHUTDOWN_TIMEOUT_MS before SIGKILL, and checks /health', () => {
    expect(seconds(svc.stop_grace_period) * 1000).toBeGreaterThan(loadConfig(env).shutdownTimeoutMs);
    expect(svc.healthcheck.test.join(' ')).toContain('/health');
  });
});

describe('README', () => {
  it('documents exactly the environment variables that src/config.ts reads', () => {
    const readme = read('README.md');
    const section = readme.slice(readme.indexOf('### Environment variables'));
    const table = section.slice(0, section.indexOf('\n\n', section.indexOf('| variable |')));
    const documented = [...table.matchAll(/^\| `([A-Z][A-Z0-9_]+)` \|/gm)].map((m) => m[1]);
    expect(documented.sort()).toEqual([...configNames].sort());
  });
});
