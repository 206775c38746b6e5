import { adminScreens } from './admin-screens.ts';
import { sessions } from './sessions.ts';
import { shell } from './shell.ts';

export const LOCALES = ['zh-CN', 'en'] as const;
export type Locale = (typeof LOCALES)[number];
export const DEFAULT_LOCALE: Locale = 'zh-CN';
export const LANG_COOKIE = 'zhinian_lang';

export type Translate = (key: string, params?: Record<string, string | number>) => string;

/** Every dictionary, merged per locale (shell strings, then the admin screens'). */
export const dictionaries: Record<Locale, Record<string, string>> = {
  'zh-CN': { ...shell['zh-CN'], ...adminScreens['zh-CN'], ...sessions['zh-CN'] },
  en: { ...shell.en, ...adminScreens.en, ...sessions.en },
};

export function isLocale(value: unknown): value is Locale {
  return typeof value === 'string' && (LOCALES as readonly string[]).includes(value);
}

/**
 * The string `key` in `locale`, with `{name}` placeholders filled from `params`. A key missing
 * from the dictionary shows as the key itself (and test/console-pages.test.ts fails on it).
 */
export function t(locale: Locale, key: string, params?: Record<string, string | number>): string {
  const text = dictionaries[locale][key] ?? dictionaries[DEFAULT_LOCALE][key] ?? key;
  if (!params) return text;
  return text.replace(/\{(\w+)\}/g, (whole, name: string) => (name in params ? String(params[name]) : whole));
}

export function translator(locale: Locale): Translate {
  return (key, params) => t(locale, key, params);
}
