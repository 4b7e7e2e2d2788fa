/** TokenStore.create refuses bad scopes with typed errors. */
import { expect } from 'chai';
import { TokenStore } from '../src/index.js';
import { InvalidScopeError } from '../src/auth/scopes.js';
import { filesystemDriver } from './support/drivers.js';

describe('token scopes', () => {
  it('a token without scopes is a RangeError, a malformed scope an InvalidScopeError, and neither is stored', async () => {
    const tokens = new TokenStore((await filesystemDriver.open()).storage);
    const refused = async (scopes: string[]): Promise<unknown> => tokens.create({ scopes }).then(() => expect.fail('expected a refusal'), (err: unknown) => err);
    const none = await refused([]);
    expect(none).to.be.instanceOf(RangeError);
    expect((none as Error).message).to.equal('a token needs at least one scope');
    expect(await refused(['write:**'])).to.be.instanceOf(InvalidScopeError);
    expect(await tokens.list()).to.deep.equal([]);
  });
});
