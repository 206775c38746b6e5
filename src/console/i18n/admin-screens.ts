/** Strings of the admin screens (clients & keys, webhooks, usage, audit). Owned by the admin-screens module. */
export const adminScreens: { 'zh-CN': Record<string, string>; en: Record<string, string> } = { 'zh-CN': {}, en: {} };
