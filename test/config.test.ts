import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';

describe('loadConfig', () => {
  it('reads the defaults from an empty environment', () => {
    const c = loadConfig({});
    expect(c.port).toBe(3000);
    expect(c.host).toBe('127.0.0.1');
    expect(c.apiKeys).toEqual([]);
    expect(c.testHooks).toBe(false);
  });

  it('splits API_KEYS on commas and trims them', () => {
    expect(loadConfig({ API_KEYS: ' k1, k2 ,' }).apiKeys).toEqual(['k1', 'k2']);
  });

  it.each([',', ' , ', ',,,'])(
    'refuses API_KEYS=%j, which lists no key, rather than silently turning keys off',
    (v) => {
      expect(() => loadConfig({ API_KEYS: v })).toThrow(ConfigError);
      expect(() => loadConfig({ API_KEYS: v })).toThrow(/API_KEYS: lists no key/);
    },
  );

  it('names the variable that is wrong', () => {
    expect(() => loadConfig({ PORT: 'abc' })).toThrow(/PORT/);
    expect(() => loadConfig({ WORKERS: '0' })).toThrow(/WORKERS/);
  });
});
