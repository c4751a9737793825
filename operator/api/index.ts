export * from "./agentsession.js";
export * from "./approval.js";
export * from "./capsule.js";
export * from "./common.js";
export * from "./crd.js";
export * from "./structural.js";
